//! Throughput of the XML paths every stanza takes: the upstream splitter
//! (`xml::split::StreamSplitter`), the check of one WebSocket message
//! (`xml::client::parse_client_frame`) and the check of one BOSH request body
//! (`xml::body::parse_client_body`).
//!
//!   cargo bench --bench xml
//!
//! Inputs are built here, shaped like what a chat client and a server exchange; each is parsed
//! once before timing and checked for the expected outcome, so a change that turns an input
//! into an error fails the bench instead of timing the error path. Figures are bytes of input
//! per second; on a shared machine compare runs side by side, not with old notes.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use xmpp_gateway::xml::body::{parse_client_body, BodyDocument};
use xmpp_gateway::xml::client::{parse_client_frame, ClientFrame};
use xmpp_gateway::xml::split::{ElementKind, StreamItem, StreamSplitter};
use xmpp_gateway::xml::Limits;

/// The header a server such as Prosody or ejabberd opens a client stream with (RFC 6120 §4.7).
const SERVER_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' xml:lang='en' \
     id='0e8f1b5c-4a7d-4e2f-9c61-3b5d7a9e2f10' from='capulet.example' version='1.0'>";

/// Stanzas in the upstream stream: about half a MiB of chat.
const STREAM_STANZAS: usize = 1000;

/// A one-to-one chat message as servers relay it: addresses, an id, a body of a sentence or
/// two, a chat state (XEP-0085), a receipt request (XEP-0184) and the ids of XEP-0359. About
/// 490 bytes. `xmlns` is the declaration the stanza carries itself ("" for none, as servers
/// write stanzas that inherit the stream's default namespace).
fn chat_message(i: usize, xmlns: &str) -> String {
    format!(
        "<message{xmlns} from='romeo@montague.example/orchard-{r:04x}' \
         to='juliet@capulet.example/balcony' type='chat' id='msg-{i:08}-5c1e8b3a' \
         xml:lang='en'><body>Message {i}: it is the east, and Juliet is the sun; \
         arise, fair sun &amp; kill the envious moon.</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/>\
         <request xmlns='urn:xmpp:receipts'/>\
         <origin-id xmlns='urn:xmpp:sid:0' id='4d8f0c1e-{i:08}'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='juliet@capulet.example' id='2f6a-{i:08}'/>\
         </message>",
        r = i % 7,
    )
}

/// A server stream: the header, then `STREAM_STANZAS` chat messages, some separated by the
/// whitespace keepalives and line breaks servers send.
fn server_stream(xmlns: &str) -> Vec<u8> {
    let mut stream = String::from(SERVER_HEADER);
    for i in 0..STREAM_STANZAS {
        stream.push_str(&chat_message(i, xmlns));
        if i % 10 == 0 {
            stream.push('\n');
        }
    }
    stream.into_bytes()
}

/// Reads `stream` in reads of at most `chunk` bytes the way the upstream reader does: reserve
/// room, append what the socket gave, take every complete item, give the buffer back when
/// nothing partial is left. Returns (headers, elements, total element bytes).
fn split_stream(stream: &[u8], chunk: usize) -> (usize, usize, usize) {
    let mut splitter = StreamSplitter::new(Limits::size_only(1 << 20));
    let (mut headers, mut elements, mut bytes) = (0, 0, 0);
    for read in stream.chunks(chunk) {
        let buf = splitter.buffer_mut();
        buf.reserve(chunk);
        buf.extend_from_slice(read);
        while let Some(item) = splitter.next_item().expect("bench stream splits") {
            match item {
                StreamItem::Header(_) => headers += 1,
                StreamItem::Element(element) => {
                    elements += 1;
                    bytes += black_box(element).bytes.len();
                }
                StreamItem::End => panic!("bench stream has no end"),
            }
        }
        splitter.release_idle_memory();
    }
    assert_eq!(splitter.buffered(), 0, "a partial element left at the end");
    (headers, elements, bytes)
}

fn split(c: &mut Criterion) {
    let mut group = c.benchmark_group("split");
    // One iteration reads the whole stream (milliseconds): fewer samples keep the run short.
    group.sample_size(30);
    // Two paths: stanzas that inherit `jabber:client` from the header get the declaration
    // copied in (a new buffer per stanza); stanzas that declare it themselves are handed on as
    // slices of the read buffer.
    for (case, xmlns) in [
        ("inherit_xmlns", ""),
        ("own_xmlns", " xmlns='jabber:client'"),
    ] {
        let stream = server_stream(xmlns);
        let stanza_bytes: usize = (0..STREAM_STANZAS)
            .map(|i| chat_message(i, xmlns).len())
            .sum();
        let copied = if xmlns.is_empty() {
            " xmlns='jabber:client'".len()
        } else {
            0
        };
        let first = split_first_element(&stream);
        assert_eq!(first.kind, ElementKind::Other);
        assert!(
            first
                .bytes
                .starts_with(b"<message xmlns='jabber:client' from="),
            "first stanza not standalone: {:?}",
            String::from_utf8_lossy(&first.bytes)
        );
        group.throughput(Throughput::Bytes(stream.len() as u64));
        for chunk in [4096, 65536] {
            assert_eq!(
                split_stream(&stream, chunk),
                (1, STREAM_STANZAS, stanza_bytes + STREAM_STANZAS * copied),
                "{case}, {chunk}-byte reads"
            );
            let id = BenchmarkId::new(case, format!("{}KiB_reads", chunk / 1024));
            group.bench_with_input(id, &stream, |b, stream| {
                b.iter(|| split_stream(stream, chunk))
            });
        }
    }
    group.finish();
}

/// The first element the splitter returns for `stream` read whole.
fn split_first_element(stream: &[u8]) -> xmpp_gateway::xml::split::Element {
    let mut splitter = StreamSplitter::new(Limits::size_only(1 << 20));
    splitter.buffer_mut().extend_from_slice(stream);
    loop {
        match splitter.next_item().expect("bench stream splits") {
            Some(StreamItem::Element(element)) => return element,
            Some(_) => {}
            None => panic!("no element in the bench stream"),
        }
    }
}

/// A chat message as a browser client (Converse.js, Strophe.js) sends it in one WebSocket
/// message or BOSH child: `xmlns='jabber:client'` on the stanza, no `from`.
fn client_message(i: usize) -> String {
    format!(
        "<message xmlns='jabber:client' to='romeo@montague.example' type='chat' \
         id='0b3e1c5d-{i:04}-4f7a-8e2b-6d9c0a1f3e57'><body>Message {i}: good night, good \
         night! Parting is such sweet sorrow, that I shall say good night till it be \
         morrow.</body><active xmlns='http://jabber.org/protocol/chatstates'/>\
         <request xmlns='urn:xmpp:receipts'/>\
         <origin-id xmlns='urn:xmpp:sid:0' id='0b3e1c5d-{i:04}-4f7a-8e2b-6d9c0a1f3e57'/>\
         </message>"
    )
}

fn client_frame(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("client_frame");

    let message = Bytes::from(client_message(1));
    assert_eq!(
        parse_client_frame(message.clone(), &limits),
        Ok(ClientFrame::Element(message.clone()))
    );
    let open = Bytes::from_static(
        b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='capulet.example' \
          version='1.0' xml:lang='en'/>",
    );
    match parse_client_frame(open.clone(), &limits) {
        Ok(ClientFrame::Open(frame)) => assert_eq!(frame.to.as_deref(), Some("capulet.example")),
        other => panic!("<open/> frame: {other:?}"),
    }

    for (case, frame) in [("message", message), ("open", open)] {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(case, format!("{}B", frame.len())),
            &frame,
            |b, frame| b.iter(|| parse_client_frame(black_box(frame.clone()), &limits)),
        );
    }
    group.finish();
}

/// A request body as Strophe.js writes it: sid, rid and the httpbind namespace on the
/// wrapper, `children` chat messages inside (none: an empty poll).
fn request_body(children: usize) -> Bytes {
    let mut body = String::from(
        "<body rid='1573741820' sid='7c9e2f4a1b3d5e6f8a0c2e4b6d8f0a1c3e5b7d9f' \
         xmlns='http://jabber.org/protocol/httpbind'",
    );
    if children == 0 {
        body.push_str("/>");
    } else {
        body.push('>');
        for i in 0..children {
            body.push_str(&client_message(i));
        }
        body.push_str("</body>");
    }
    Bytes::from(body)
}

fn bosh_body(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("bosh_body");
    for (case, children) in [("poll", 0), ("messages", 1), ("messages", 10)] {
        let body = request_body(children);
        match parse_client_body(&body, &limits) {
            Ok(BodyDocument::Body(parsed)) => {
                assert_eq!(parsed.children.len(), children, "{case}/{children}");
                assert_eq!(parsed.attributes.len(), 3, "{case}/{children}");
            }
            other => panic!("{case}/{children}: {other:?}"),
        }
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(case, format!("{children}_children_{}B", body.len())),
            &body,
            |b, body| b.iter(|| parse_client_body(black_box(body), &limits)),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Figures only: no gnuplot run even where it is installed.
    config = Criterion::default().without_plots();
    targets = split, client_frame, bosh_body
}
criterion_main!(benches);

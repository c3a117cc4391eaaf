//! Process limits the load tester and the fixture need for thousands of sockets.

/// Raises the soft limit on open files to the hard limit, where allowed; says what it got.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => note(&format!("open-file limit: {limit}")),
        Err(err) => note(&format!("could not raise the open-file limit: {err}")),
    }
}

fn note(message: &str) {
    if std::env::var_os("XMPP_LOADTEST_QUIET").is_none() {
        eprintln!("xmpp-loadtest: {message}");
    }
}

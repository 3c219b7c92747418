//! Classification of driver errors into [`ConnectorError`]s.
//!
//! Transient: I/O and connection errors, server shutting down, too many
//! connections, deadlock (1213) and lock wait timeout (1205), interrupted
//! queries. Definite: everything that needs an operator (unknown table or
//! column, access denied, bad URL, purged binlog, data errors).

use dcsync_core::connector::ConnectorError;

/// Server error codes that a retry may cure.
const TRANSIENT_CODES: &[u16] = &[
    1040, // ER_CON_COUNT_ERROR: too many connections
    1053, // ER_SERVER_SHUTDOWN
    1077, // ER_NORMAL_SHUTDOWN
    1078, // ER_GOT_SIGNAL
    1079, // ER_SHUTDOWN_COMPLETE
    1152, // ER_ABORTING_CONNECTION
    1153, // ER_NET_PACKET_TOO_LARGE (may pass after max_allowed_packet raise)
    1158, 1159, 1160, 1161, // network read/write errors, timeouts
    1205, // ER_LOCK_WAIT_TIMEOUT
    1213, // ER_LOCK_DEADLOCK
    1317, // ER_QUERY_INTERRUPTED
    1927, // ER_CONNECTION_KILLED (MariaDB)
    2006, 2013, // gone away / lost connection (client-side codes)
    3024, // ER_QUERY_TIMEOUT (MySQL)
    4031, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL)
];

/// Whether a server error code is transient (see the module docs).
pub fn is_transient_code(code: u16) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// Classifies a driver error; `what` says what was being done (and names
/// the table where there is one). Never includes credentials: driver errors
/// do not carry the URL password.
pub fn classify(what: &str, e: mysql_async::Error) -> ConnectorError {
    use mysql_async::Error as E;
    match e {
        E::Io(e) => ConnectorError::Transient(format!("{what}: I/O error: {e}")),
        E::Driver(e) => ConnectorError::Transient(format!("{what}: driver error: {e}")),
        E::Server(s) if is_transient_code(s.code) => ConnectorError::Transient(format!(
            "{what}: server error {} ({}): {}",
            s.code, s.state, s.message
        )),
        E::Server(s) => ConnectorError::Definite(format!(
            "{what}: server error {} ({}): {}",
            s.code, s.state, s.message
        )),
        E::Url(e) => ConnectorError::Definite(format!("{what}: bad store URL: {e}")),
        E::Other(e) => ConnectorError::Transient(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert!(is_transient_code(1213));
        assert!(is_transient_code(1205));
        assert!(!is_transient_code(1146));
        assert!(!is_transient_code(1054));
    }
}

//! The r2d2 connection manager: how a connection is made for a
//! [`ConnectionMode`], and when a checked-out one is worth a test.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::connection::{CacheSize, Connection};
use diesel::r2d2::{ManageConnection, R2D2Connection};
use diesel::{ConnectionError, PgConnection};

use super::{ConnectionMode, url};
use crate::error::Error;

/// A checkout is not tested while some connection came back healthy this
/// recently: under load the test would be one round trip per transition.
const TRUST_HEALTHY_FOR: Duration = Duration::from_millis(100);

/// After a connection was found dead, every checkout is tested for this
/// long: its siblings in the pool most likely died with it.
const DISTRUST_AFTER_LOSS_FOR: Duration = Duration::from_secs(2);

/// Makes this crate's connections (for a [`Pool`](super::Pool), or one at a
/// time with [`Manager::establish`]). Its `Debug` shows no URL (it may hold a
/// password).
pub struct Manager {
    /// The URL as given, without the pooler switch.
    url: String,
    /// The URL libpq gets.
    prepared: String,
    mode: ConnectionMode,
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    last_healthy: Option<Instant>,
    last_lost: Option<Instant>,
}

impl Health {
    fn trusted(&self, now: Instant) -> bool {
        let healthy = self
            .last_healthy
            .is_some_and(|at| now.duration_since(at) < TRUST_HEALTHY_FOR);
        let lost = self
            .last_lost
            .is_some_and(|at| now.duration_since(at) < DISTRUST_AFTER_LOSS_FOR);
        healthy && !lost
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A manager for `database_url` (a libpq URI or keyword/value string).
    /// A URI query parameter `machine_state_pooler=transaction` selects
    /// [`ConnectionMode::TransactionPooler`] (and is not passed to libpq);
    /// the mode defaults to [`ConnectionMode::Direct`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an unknown pooler mode.
    pub fn new(database_url: &str) -> Result<Manager, Error> {
        let (url, mode) = url::take_pooler_switch(database_url)?;
        Ok(Manager::with_url(url, mode.unwrap_or_default()))
    }

    fn with_url(url: String, mode: ConnectionMode) -> Manager {
        Manager {
            prepared: url::prepare(&url, mode),
            url,
            mode,
            health: Mutex::new(Health::default()),
        }
    }

    /// The same URL, in `mode` (overriding the URL's switch).
    pub fn mode(self, mode: ConnectionMode) -> Manager {
        Manager::with_url(self.url, mode)
    }

    /// The connection mode.
    pub fn connection_mode(&self) -> ConnectionMode {
        self.mode
    }

    /// The URL as libpq gets it (it may hold a password).
    pub fn libpq_url(&self) -> &str {
        &self.prepared
    }

    /// Open one connection as the pool would.
    ///
    /// # Errors
    ///
    /// [`Error::Connection`] when the database cannot be reached.
    pub fn establish(&self) -> Result<PgConnection, Error> {
        Ok(self.open()?)
    }

    fn open(&self) -> Result<PgConnection, ConnectionError> {
        let mut conn = PgConnection::establish(&self.prepared).map_err(explain_pooler)?;
        if self.mode == ConnectionMode::TransactionPooler {
            // Before any statement of ours: diesel's own setup statements at
            // `establish` are not cached (sent unnamed) already.
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        }
        Ok(conn)
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// PgBouncer refuses the startup option of a direct connection: say what to
/// do about it.
fn explain_pooler(error: ConnectionError) -> ConnectionError {
    match error {
        ConnectionError::BadConnection(message)
            if message.contains("unsupported startup parameter: options") =>
        {
            ConnectionError::BadConnection(format!(
                "{}: is this a transaction-mode pooler? then use the pooler mode \
                 (`machine_state_pooler=transaction` in the URL, `--pooler`)",
                message.trim_end()
            ))
        }
        other => other,
    }
}

impl ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PgConnection, diesel::r2d2::Error> {
        self.open().map_err(diesel::r2d2::Error::ConnectionError)
    }

    /// Tested only when the pool is not known to be healthy (see
    /// [`pool_builder`](super::pool_builder)).
    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        if self.health().trusted(Instant::now()) {
            return Ok(());
        }
        let pinged = conn.ping();
        let mut health = self.health();
        match pinged {
            Ok(()) => {
                health.last_healthy = Some(Instant::now());
                Ok(())
            }
            Err(error) => {
                health.last_lost = Some(Instant::now());
                Err(diesel::r2d2::Error::QueryError(error))
            }
        }
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        let broken = std::thread::panicking() || conn.is_broken();
        let mut health = self.health();
        if broken {
            health.last_lost = Some(Instant::now());
        } else {
            health.last_healthy = Some(Instant::now());
        }
        broken
    }
}

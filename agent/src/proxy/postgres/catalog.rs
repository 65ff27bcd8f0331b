//! Names of result columns, from the server's catalog.
//!
//! A RowDescription says which table (by OID) and which attribute (by
//! number) each column comes from, whatever the query calls it: that is what
//! column masking rules must go by, since an alias must not unmask a
//! column. The names behind the numbers are read from `pg_class`,
//! `pg_namespace` and `pg_attribute` on a side connection, logged in as the
//! session's own just-in-time role (the catalog is readable by every role),
//! over the TLS the policy asks for, and cached per server for a while.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use bytes::{BufMut as _, BytesMut};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

use super::{
    ProxyError, auth,
    codec::{self, Backend, Frame, StartupMessage},
    stream::{FrameReader, Incoming},
    tls,
};
use crate::{credentials::Lease, policy::UpstreamTls};

/// How long resolved names are trusted: a renamed column is seen within this.
pub(super) const CACHE_TTL: Duration = Duration::from_secs(60);
/// A lookup must finish within this, or the result is treated as unresolvable.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A table's name and its columns' names by attribute number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableNames {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Attribute number → column name.
    pub columns: HashMap<i16, String>,
}

impl TableNames {
    /// `schema.table.column` for an attribute number.
    pub fn qualified(&self, column: i16) -> Option<String> {
        self.columns.get(&column).map(|name| format!("{}.{}.{name}", self.schema, self.table))
    }
}

/// Why names could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Connecting, logging in or the query failed.
    #[error("reading column names from the catalog: {0}")]
    Lookup(String),
    /// The lookup took too long.
    #[error("reading column names from the catalog took longer than {0:?}")]
    Timeout(Duration),
}

/// What a side connection needs to log in.
pub struct Login<'a> {
    /// The server.
    pub server: SocketAddr,
    /// TLS as policy says.
    pub tls: &'a UpstreamTls,
    /// The session's role.
    pub lease: &'a Lease,
    /// The session's database (OIDs are per database).
    pub database: &'a str,
}

/// Which table: server, database (OIDs are per database), OID.
type TableKey = (SocketAddr, String, u32);

/// Cached table names, with when they were read.
#[derive(Default)]
pub struct Catalog {
    cache: Mutex<HashMap<TableKey, (Instant, TableNames)>>,
}

impl Catalog {
    /// Names of the tables `oids`, from the cache or the server. Tables
    /// the server does not know are absent from the answer.
    pub async fn tables(&self, login: &Login<'_>, oids: &[u32]) -> Result<HashMap<u32, TableNames>, CatalogError> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for &oid in oids {
                match cache.get(&(login.server, login.database.to_owned(), oid)) {
                    Some((at, names)) if at.elapsed() < CACHE_TTL => {
                        found.insert(oid, names.clone());
                    }
                    _ if !missing.contains(&oid) => missing.push(oid),
                    _ => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let read = tokio::time::timeout(LOOKUP_TIMEOUT, read_tables(login, &missing))
            .await
            .map_err(|_| CatalogError::Timeout(LOOKUP_TIMEOUT))?
            .map_err(|e| CatalogError::Lookup(e.to_string()))?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for (oid, names) in read {
            cache.insert((login.server, login.database.to_owned(), oid), (Instant::now(), names.clone()));
            found.insert(oid, names);
        }
        Ok(found)
    }
}

/// One side connection: log in, ask, leave.
async fn read_tables(login: &Login<'_>, oids: &[u32]) -> Result<HashMap<u32, TableNames>, ProxyError> {
    let tcp = TcpStream::connect(login.server).await?;
    tcp.set_nodelay(true)?;
    let mut upstream = tls::secure(tcp, login.tls, login.server).await?;
    let mut wire = BytesMut::new();
    StartupMessage {
        params: vec![
            ("user".into(), login.lease.role.clone()),
            ("database".into(), login.database.to_owned()),
            ("application_name".into(), "airlock-catalog".into()),
        ],
    }
    .encode(&mut wire);
    upstream.write_all(&wire).await?;
    upstream.flush().await?;
    let mut reader = FrameReader::default();
    if let auth::Login::Refused(error) = auth::login(&mut upstream, &mut reader, login.lease).await? {
        return Err(ProxyError::Io(std::io::Error::other(error.to_string())));
    }
    let list: Vec<String> = oids.iter().map(u32::to_string).collect();
    // OIDs are numbers formatted here: nothing from a client reaches this text.
    let sql = format!(
        "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
         WHERE c.oid IN ({}) AND a.attnum > 0 AND NOT a.attisdropped",
        list.join(",")
    );
    let mut query = BytesMut::new();
    query.put_slice(sql.as_bytes());
    query.put_u8(0);
    let mut out = BytesMut::new();
    Frame { tag: b'Q', body: query.freeze() }.encode(&mut out);
    upstream.write_all(&out).await?;
    upstream.flush().await?;

    let mut tables: HashMap<u32, TableNames> = HashMap::new();
    let mut queried = false;
    loop {
        let frames = match reader.next(&mut upstream, "server").await? {
            Some(Incoming::Frames(batch)) => batch.frames,
            Some(Incoming::Large { .. }) | None => {
                return Err(ProxyError::Io(std::io::Error::other("the catalog answer ended early")));
            }
        };
        for frame in frames {
            match frame.tag {
                b'D' if queried => {
                    let row =
                        codec::data_row(&frame).map_err(|error| ProxyError::Protocol { side: "server", error })?;
                    let text =
                        |i: usize| row.get(i).and_then(Option::as_ref).map(|v| String::from_utf8_lossy(v).into_owned());
                    let (Some(oid), Some(schema), Some(table), Some(attnum), Some(column)) =
                        (text(0), text(1), text(2), text(3), text(4))
                    else {
                        continue;
                    };
                    let (Ok(oid), Ok(attnum)) = (oid.parse::<u32>(), attnum.parse::<i16>()) else { continue };
                    let entry = tables.entry(oid).or_insert_with(|| TableNames { schema, table, ..Default::default() });
                    entry.columns.insert(attnum, column);
                }
                b'E' => {
                    let message = match Backend::parse(&frame) {
                        Ok(Backend::Error(fields)) => fields.to_string(),
                        _ => "malformed error".into(),
                    };
                    return Err(ProxyError::Io(std::io::Error::other(message)));
                }
                b'Z' if queried => {
                    let mut bye = BytesMut::new();
                    Frame { tag: b'X', body: Default::default() }.encode(&mut bye);
                    let _ = upstream.write_all(&bye).await;
                    return Ok(tables);
                }
                // The first ReadyForQuery ends the login; the query was sent already.
                b'Z' => queried = true,
                _ => {}
            }
        }
    }
}

//! The local control API: HTTP + JSON on loopback, guarded by a bearer token that only the
//! node's owner can read (mode 0600 in the data dir). `GET /v1/events` streams new messages
//! as server-sent events; `GET /` serves a small web page that uses the same API.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::core::CoreError;
use crate::crypto;
use crate::faults::FaultConfig;
use crate::service::{FileReader, KnownFile, NodeError, NodeHandle};

#[derive(Clone)]
struct AppState {
    node: NodeHandle,
    token: String,
    tickets: Arc<Tickets<KnownFile>>,
}

/// How long a download ticket can be redeemed.
const TICKET_TTL: Duration = Duration::from_secs(60);
/// Tickets held at most; the oldest goes first past it.
const MAX_TICKETS: usize = 64;

/// One-use capabilities for downloads that the browser saves itself. A navigation cannot
/// carry the bearer token, and reading the file into the page first would hold all of it in
/// the tab's memory; so the page asks for a ticket (with the token), and the browser then
/// downloads `/download/<ticket>` like any other link, straight to disk.
struct Tickets<T>(Mutex<Vec<Ticket<T>>>);

impl<T> Default for Tickets<T> {
    fn default() -> Self {
        Tickets(Mutex::default())
    }
}

struct Ticket<T> {
    secret: String,
    /// What the ticket downloads.
    what: T,
    expires: Instant,
}

impl<T> Tickets<T> {
    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Ticket<T>>> {
        // Nothing in the list can be left half-updated by a panic: keep using it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new ticket (256 random bits, hex) for `what`.
    fn issue(&self, what: T, now: Instant) -> Result<String, ApiError> {
        let key = crypto::random_key().map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make a download ticket: {e}"),
            )
        })?;
        let secret = hex::encode(key.as_slice());
        let mut held = self.held();
        held.retain(|t| t.expires > now);
        if held.len() >= MAX_TICKETS {
            held.remove(0);
        }
        held.push(Ticket {
            secret: secret.clone(),
            what,
            expires: now + TICKET_TTL,
        });
        Ok(secret)
    }

    /// What a live ticket was issued for; the ticket is used up.
    fn redeem(&self, given: &str, now: Instant) -> Option<T> {
        let mut held = self.held();
        held.retain(|t| t.expires > now);
        // Every ticket is compared in full, in constant time.
        let mut found = None;
        for (i, t) in held.iter().enumerate() {
            if crypto::ct_eq(t.secret.as_bytes(), given.as_bytes()) {
                found = Some(i);
            }
        }
        Some(held.swap_remove(found?).what)
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub struct ApiErrorBody {
    pub error: String,
}

#[derive(Debug)]
struct ApiError(StatusCode, String);

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let status = match &e {
            NodeError::Core(
                CoreError::UnknownRoom(_)
                | CoreError::UnknownContact(_)
                | CoreError::UnknownFile(..)
                | CoreError::UnknownMessage(..)
                | CoreError::NoMessage(..)
                | CoreError::NoAuthor(..),
            ) => StatusCode::NOT_FOUND,
            NodeError::Core(
                CoreError::AlreadyJoined(_)
                | CoreError::JoinedAs(_)
                | CoreError::SameContact(_)
                | CoreError::ContactExists(_)
                | CoreError::TooManyRooms(_),
            ) => StatusCode::CONFLICT,
            NodeError::Core(
                CoreError::EmptyMessage
                | CoreError::OwnContact
                | CoreError::Room(_)
                | CoreError::Identity(_)
                | CoreError::Envelope(_)
                | CoreError::AmbiguousFile(..)
                | CoreError::BadFileId(_)
                | CoreError::NotEditable(..)
                | CoreError::Deleted(..)
                | CoreError::BadReaction(_)
                | CoreError::IgnoreSelf
                | CoreError::NotInvitable(_)
                | CoreError::NotForked(_)
                | CoreError::DirectRoom(_),
            ) => StatusCode::BAD_REQUEST,
            NodeError::OwnFork { .. } => StatusCode::CONFLICT,
            NodeError::FileInput(_) => StatusCode::BAD_REQUEST,
            NodeError::FileUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            NodeError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            NodeError::Listen { .. } => StatusCode::BAD_REQUEST,
            NodeError::Dial { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ApiErrorBody { error: self.1 })).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct JoinRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct NameRequest {
    pub name: String,
}

/// A joined room, by its local name.
#[derive(Serialize, Deserialize, Debug)]
pub struct RoomRequest {
    pub room: String,
}

/// Send a text to a room; with `reply_to`, as a reply to that message.
#[derive(Serialize, Deserialize, Debug)]
pub struct SendRequest {
    pub room: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageRequest>,
}

impl SendRequest {
    /// A plain text, not a reply.
    pub fn new(room: impl Into<String>, text: impl Into<String>) -> Self {
        SendRequest {
            room: room.into(),
            text: text.into(),
            reply_to: None,
        }
    }
}

/// A message of a room: its author (a contact's name, or 8+ hex digits of a user id) and
/// its seq in the author's chain.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct MessageRequest {
    pub author: String,
    pub seq: u64,
}

/// Edit our message `seq` (its number in `Sent` and in history views) in a room.
#[derive(Serialize, Deserialize, Debug)]
pub struct EditRequest {
    pub room: String,
    pub seq: u64,
    pub text: String,
}

/// Invite contacts to a room (see `Core::invite`).
#[derive(Serialize, Deserialize, Debug)]
pub struct InviteRequest {
    pub room: String,
    pub contacts: Vec<String>,
}

/// Ignore an author of a room (a contact's name, or 8+ hex digits of a user id), or see it
/// again (`undo`).
#[derive(Serialize, Deserialize, Debug)]
pub struct IgnoreRequest {
    pub room: String,
    pub author: String,
    #[serde(default)]
    pub undo: bool,
}

/// React to a message (as `reply_to` names one) with an emoji, or take it back (`undo`).
#[derive(Serialize, Deserialize, Debug)]
pub struct ReactRequest {
    pub room: String,
    pub author: String,
    pub seq: u64,
    pub emoji: String,
    #[serde(default)]
    pub undo: bool,
}

impl ReactRequest {
    /// `emoji` on the message `to` of `room` (`undo`: taking it back).
    pub fn new(room: impl Into<String>, to: MessageRequest, emoji: String, undo: bool) -> Self {
        ReactRequest {
            room: room.into(),
            author: to.author,
            seq: to.seq,
            emoji,
            undo,
        }
    }
}

/// Delete our message `seq` in a room.
#[derive(Serialize, Deserialize, Debug)]
pub struct DeleteRequest {
    pub room: String,
    pub seq: u64,
}

/// Share a file: `path` is read by the node, so it must be absolute (the CLI resolves it).
#[derive(Serialize, Deserialize, Debug)]
pub struct ShareRequest {
    pub room: String,
    pub path: String,
}

/// Fetch a file by id (or a prefix of 8+ hex digits) into `path`, or into `dir` under the
/// file's own name. Both must be absolute.
#[derive(Serialize, Deserialize, Debug)]
pub struct FetchRequest {
    pub room: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// Drop this node's copy of a file (by id, or a prefix of 8+ hex digits); the message stays.
#[derive(Serialize, Deserialize, Debug)]
pub struct ForgetRequest {
    pub room: String,
    pub id: String,
}

/// Upload a file to share (`POST /v1/upload?room=R&name=N`, the file as the raw body): for
/// clients such as the web page, which cannot name a path on the node's machine.
#[derive(Serialize, Deserialize, Debug)]
pub struct UploadQuery {
    pub room: String,
    pub name: String,
}

/// Download a file (`GET /v1/download?room=R&id=ID`): fetched from peers if need be, then
/// sent as the response body.
#[derive(Serialize, Deserialize, Debug)]
pub struct DownloadQuery {
    pub room: String,
    pub id: String,
}

/// A download ticket (`POST /v1/download-ticket`, body as [`DownloadQuery`]): `url` is the
/// address to download the file from, once, within `expires_in_s`, without the token.
#[derive(Serialize, Deserialize, Debug)]
pub struct TicketView {
    pub url: String,
    pub name: String,
    pub size: u64,
    pub expires_in_s: u64,
}

/// A room's last `limit` entries; with `kind`, its last `limit` messages of that kind
/// (`"file"`: the room's files, without loading or opening its text messages); with
/// `contains`, its last `limit` messages whose text or file name contains that, whatever
/// its case. To read further back: `before`, a message already shown (the page ends just
/// before it), and `skip`, how many of the newest to pass over first (see
/// [`crate::journal::Page`]).
#[derive(Serialize, Deserialize, Debug)]
pub struct HistoryRequest {
    pub room: String,
    pub limit: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::envelope::Kind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Before>,
}

/// The longest text a history search looks for, in bytes.
pub const MAX_SEARCH: usize = 1024;

impl HistoryRequest {
    /// The room's last `limit` messages, of any kind.
    pub fn last(room: String, limit: usize) -> Self {
        HistoryRequest {
            room,
            limit,
            kind: None,
            contains: None,
            skip: 0,
            before: None,
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A message's place in a room's display order, as its view gives it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Before {
    pub lamport: u64,
    pub author_id: String,
    pub seq: u64,
}

impl Before {
    fn position(&self) -> Result<crate::journal::Position, ApiError> {
        let mut author = [0u8; 32];
        hex::decode_to_slice(&self.author_id, &mut author).map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "before.author_id must be a user id: 64 hex digits".into(),
            )
        })?;
        Ok(crate::journal::Position {
            lamport: self.lamport,
            author,
            seq: self.seq,
        })
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub struct ContactRequest {
    pub name: String,
    pub code: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct DmRequest {
    pub contact: String,
    pub text: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct GroupRequest {
    pub name: String,
    pub members: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct DialRequest {
    pub addr: String,
}

/// The answer to `/stop`: whose node stopped.
#[derive(Serialize, Deserialize, Debug)]
pub struct Stopped {
    pub username: String,
    pub user_id: String,
}

/// The answer to a dial: whom the connection reached.
#[derive(Serialize, Deserialize, Debug)]
pub struct Dialled {
    pub peer_id: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct IdView {
    pub username: String,
    pub user_id: String,
    pub contact_code: String,
    /// The data dir's peer id; none for a data dir that no node has run on yet.
    pub peer_id: Option<String>,
}

impl IdView {
    pub fn of(me: &crate::identity::Identity, peer: Option<libp2p::PeerId>) -> IdView {
        IdView {
            username: me.username().to_string(),
            user_id: me.id().to_hex(),
            contact_code: me.contact_code().encode(),
            peer_id: peer.map(|p| p.to_string()),
        }
    }
}

/// Builds the router; `token` is required as `Authorization: Bearer <token>` on /v1.
pub fn router(node: NodeHandle, token: String) -> Router {
    let state = AppState {
        node,
        token,
        tickets: Arc::default(),
    };
    let v1 = Router::new()
        .route("/status", get(status))
        .route("/id", get(id))
        .route("/peers", get(peers))
        .route("/rooms", get(rooms))
        .route("/join", post(join))
        .route("/leave", post(leave))
        .route("/read", post(mark_read))
        .route("/send", post(send))
        .route("/edit", post(edit))
        .route("/react", post(react))
        .route("/delete", post(delete))
        .route("/history", post(history))
        .route("/members", post(members))
        .route("/share", post(share))
        .route("/fetch", post(fetch))
        .route("/forget", post(forget))
        .route("/upload", post(upload))
        .route("/download", get(download))
        .route("/download-ticket", post(download_ticket))
        .route("/contacts", get(contacts).post(add_contact))
        .route("/contacts/remove", post(remove_contact))
        .route("/ignore", post(ignore))
        .route("/ignored", get(ignored))
        .route("/repair", post(repair))
        .route("/dm", post(dm))
        .route("/groups", post(group))
        .route("/invite", post(invite))
        .route("/dial", post(dial))
        .route("/stop", post(stop))
        .route("/faults", get(get_faults).post(set_faults))
        .route("/block", post(block))
        .route("/events", get(events))
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(page))
        .route("/download/{ticket}", get(download_with_ticket))
        .nest("/v1", v1)
        .with_state(state)
}

/// Serves the API on `addr` (loopback) until the node stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: NodeHandle,
    token: String,
) -> std::io::Result<()> {
    let stopped = node.clone();
    // Once the node stopped, requests under way (the `/stop` that did it) still get their
    // answer; no new one is taken.
    axum::serve(listener, router(node, token))
        .with_graceful_shutdown(async move { stopped.stopped().await })
        .await
}

/// Binds the API listener, on loopback unless told otherwise; port 0 picks a free port.
pub async fn bind(
    ip: Option<std::net::IpAddr>,
    port: u16,
) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let ip = ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let l = tokio::net::TcpListener::bind((ip, port)).await?;
    let addr = l.local_addr()?;
    Ok((l, addr))
}

async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !crypto::ct_eq(given.as_bytes(), s.token.as_bytes()) {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (see api.token in the data dir)".into(),
        )
        .into_response();
    }
    next.run(req).await
}

async fn status(State(s): State<AppState>) -> ApiResult<crate::service::Status> {
    Ok(Json(s.node.status().await?))
}

async fn id(State(s): State<AppState>) -> ApiResult<IdView> {
    Ok(Json(IdView::of(s.node.identity(), Some(s.node.peer_id()))))
}

async fn peers(State(s): State<AppState>) -> ApiResult<Vec<crate::service::PeerView>> {
    Ok(Json(s.node.peers().await?))
}

async fn rooms(State(s): State<AppState>) -> ApiResult<Vec<crate::core::RoomView>> {
    Ok(Json(s.node.rooms().await?))
}

async fn join(
    State(s): State<AppState>,
    Json(r): Json<JoinRequest>,
) -> ApiResult<crate::core::RoomView> {
    Ok(Json(s.node.join(&r.name, r.password).await?))
}

async fn leave(
    State(s): State<AppState>,
    Json(r): Json<NameRequest>,
) -> ApiResult<crate::core::RoomView> {
    Ok(Json(s.node.leave(&r.name).await?))
}

async fn mark_read(
    State(s): State<AppState>,
    Json(r): Json<RoomRequest>,
) -> ApiResult<crate::core::RoomView> {
    Ok(Json(s.node.mark_read(&r.room).await?))
}

async fn members(
    State(s): State<AppState>,
    Json(r): Json<RoomRequest>,
) -> ApiResult<Vec<crate::core::MemberView>> {
    Ok(Json(s.node.members(&r.room).await?))
}

async fn send(
    State(s): State<AppState>,
    Json(r): Json<SendRequest>,
) -> ApiResult<crate::service::Sent> {
    let sent = match &r.reply_to {
        Some(to) => s.node.reply(&r.room, &r.text, &to.author, to.seq).await?,
        None => s.node.send(&r.room, &r.text).await?,
    };
    Ok(Json(sent))
}

async fn edit(
    State(s): State<AppState>,
    Json(r): Json<EditRequest>,
) -> ApiResult<crate::service::Sent> {
    Ok(Json(s.node.edit(&r.room, r.seq, &r.text).await?))
}

async fn react(
    State(s): State<AppState>,
    Json(r): Json<ReactRequest>,
) -> ApiResult<crate::service::Sent> {
    let sent = s.node.react(&r.room, &r.author, r.seq, &r.emoji, r.undo);
    Ok(Json(sent.await?))
}

async fn delete(
    State(s): State<AppState>,
    Json(r): Json<DeleteRequest>,
) -> ApiResult<crate::service::Sent> {
    Ok(Json(s.node.delete(&r.room, r.seq).await?))
}

fn absolute(p: &str, what: &str) -> Result<std::path::PathBuf, ApiError> {
    let path = std::path::PathBuf::from(p);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{what} must be an absolute path, not {p}"),
        ))
    }
}

async fn share(
    State(s): State<AppState>,
    Json(r): Json<ShareRequest>,
) -> ApiResult<crate::service::Sent> {
    let path = absolute(&r.path, "path")?;
    Ok(Json(s.node.share_file(&r.room, path).await?))
}

async fn fetch(
    State(s): State<AppState>,
    Json(r): Json<FetchRequest>,
) -> ApiResult<crate::service::Fetched> {
    use crate::service::Target;
    let target = match (&r.path, &r.dir) {
        (Some(p), None) => Target::Path(absolute(p, "path")?),
        (None, Some(d)) => Target::InDir(absolute(d, "dir")?),
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give exactly one of path and dir".into(),
            ));
        }
    };
    Ok(Json(s.node.fetch_file(&r.room, &r.id, target).await?))
}

async fn forget(
    State(s): State<AppState>,
    Json(r): Json<ForgetRequest>,
) -> ApiResult<crate::service::Forgotten> {
    Ok(Json(s.node.forget_file(&r.room, &r.id).await?))
}

async fn upload(
    State(s): State<AppState>,
    Query(q): Query<UploadQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<crate::service::Sent> {
    if !crate::files::valid_name(&q.name) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "not a file name cryptchat can carry: {:?} (no directories, no control or \
                 bidirectional formatting characters, at most {} bytes)",
                q.name,
                crate::files::MAX_NAME
            ),
        ));
    }
    // An unknown room is refused before the body is read.
    s.node.check_room(&q.room).await?;
    let dir = s.node.upload_dir()?;
    // The upload waits in the data dir while it is sealed into the journal: for a moment it
    // takes its own size there and its sealed copy's (`disk::stored_size`).
    if let Some(len) = (headers.get(axum::http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        let needed = len.saturating_add(crate::disk::stored_size(len));
        NodeError::unless_room(&dir, &q.name, needed)?;
    }
    let path = dir.join(&q.name);
    let shared = match receive(body, &path).await {
        Ok(()) => s
            .node
            .share_file(&q.room, path)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot remove an upload");
    }
    Ok(Json(shared?))
}

/// Writes a request body to `path`, refusing more than a file may hold.
async fn receive(body: Body, path: &std::path::Path) -> Result<(), ApiError> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot store the upload: {e}"),
        )
    };
    let mut out = tokio::fs::File::create(path).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(part) = stream.next().await {
        let part = part.map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the upload was cut short: {e}"),
            )
        })?;
        total += part.len() as u64;
        if total > crate::files::MAX_FILE_SIZE {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a file may hold at most {} bytes",
                    crate::files::MAX_FILE_SIZE
                ),
            ));
        }
        out.write_all(&part).await.map_err(io)?;
    }
    out.flush().await.map_err(io)
}

async fn download(
    State(s): State<AppState>,
    Query(q): Query<DownloadQuery>,
) -> Result<Response, ApiError> {
    stream_file(s.node.read_file(&q.room, &q.id).await?)
}

/// Fetches what is missing first, so that the page can show progress and errors while it
/// waits; the download the ticket then allows only streams.
async fn download_ticket(
    State(s): State<AppState>,
    Json(q): Json<DownloadQuery>,
) -> ApiResult<TicketView> {
    let reader = s.node.read_file(&q.room, &q.id).await?;
    // The file as found: redeeming the ticket does not look it up again.
    let ticket = s.tickets.issue(reader.known(), Instant::now())?;
    Ok(Json(TicketView {
        url: format!("/download/{ticket}"),
        name: reader.name.clone(),
        size: reader.size,
        expires_in_s: TICKET_TTL.as_secs(),
    }))
}

async fn download_with_ticket(
    State(s): State<AppState>,
    UrlPath(ticket): UrlPath<String>,
) -> Result<Response, ApiError> {
    let Some(known) = s.tickets.redeem(&ticket, Instant::now()) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "unknown, used or expired download ticket".into(),
        ));
    };
    stream_file(s.node.read_known(known).await?)
}

/// The file as a response body (fetched from peers first, if need be, by the caller).
fn stream_file(reader: FileReader) -> Result<Response, ApiError> {
    let reader = Arc::new(reader);
    // Chunks are read and opened on a blocking thread, a few ahead of the client.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let source = reader.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..source.chunks() {
            let chunk = source.chunk(i).map_err(|e| {
                tracing::warn!(error = %e, "a download failed midway");
                std::io::Error::other(e.to_string())
            });
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, reader.size)
        .header(header::CONTENT_DISPOSITION, attachment(&reader.name))
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `Content-Disposition` for a download named `name` (RFC 6266: the name percent-encoded
/// as UTF-8, so no name can break out of the header).
fn attachment(name: &str) -> String {
    let mut out = String::from("attachment; filename*=UTF-8''");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn history(
    State(s): State<AppState>,
    Json(r): Json<HistoryRequest>,
) -> ApiResult<Vec<crate::core::MessageView>> {
    let page = crate::journal::Page {
        limit: r.limit.min(100_000),
        skip: r.skip,
        before: r.before.as_ref().map(Before::position).transpose()?,
    };
    let only = match r.kind {
        Some(crate::envelope::Kind::File) => Some(crate::envelope::Kind::File),
        Some(kind) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("history lists all messages or the files only, not {kind:?}"),
            ));
        }
        None => None,
    };
    // Nothing to look for is no search: the whole history matches.
    let contains = r.contains.filter(|c| !c.is_empty());
    if contains.as_ref().is_some_and(|c| c.len() > MAX_SEARCH) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("a search is at most {MAX_SEARCH} bytes"),
        ));
    }
    let query = crate::core::Query {
        page,
        only,
        contains,
    };
    Ok(Json(s.node.query(&r.room, query).await?))
}

async fn contacts(State(s): State<AppState>) -> ApiResult<Vec<crate::core::ContactView>> {
    Ok(Json(s.node.contacts().await?))
}

async fn add_contact(
    State(s): State<AppState>,
    Json(r): Json<ContactRequest>,
) -> ApiResult<crate::core::ContactView> {
    Ok(Json(s.node.add_contact(&r.name, &r.code).await?))
}

async fn invite(
    State(s): State<AppState>,
    Json(r): Json<InviteRequest>,
) -> ApiResult<Vec<crate::service::Sent>> {
    Ok(Json(s.node.invite(&r.room, r.contacts).await?))
}

async fn ignore(
    State(s): State<AppState>,
    Json(r): Json<IgnoreRequest>,
) -> ApiResult<crate::core::IgnoredView> {
    Ok(Json(s.node.ignore(&r.room, &r.author, r.undo).await?))
}

async fn repair(
    State(s): State<AppState>,
    Json(r): Json<RoomRequest>,
) -> ApiResult<crate::service::Repaired> {
    Ok(Json(s.node.repair(&r.room).await?))
}

async fn ignored(State(s): State<AppState>) -> ApiResult<Vec<crate::core::IgnoredView>> {
    Ok(Json(s.node.ignored().await?))
}

async fn remove_contact(
    State(s): State<AppState>,
    Json(r): Json<NameRequest>,
) -> ApiResult<crate::core::ContactView> {
    Ok(Json(s.node.remove_contact(&r.name).await?))
}

async fn dm(
    State(s): State<AppState>,
    Json(r): Json<DmRequest>,
) -> ApiResult<crate::service::Sent> {
    Ok(Json(s.node.dm(&r.contact, &r.text).await?))
}

async fn group(
    State(s): State<AppState>,
    Json(r): Json<GroupRequest>,
) -> ApiResult<crate::core::RoomView> {
    Ok(Json(s.node.create_group(&r.name, r.members).await?))
}

async fn dial(State(s): State<AppState>, Json(r): Json<DialRequest>) -> ApiResult<Dialled> {
    let addr = r
        .addr
        .parse()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad multiaddr: {e}")))?;
    let peer = s.node.dial(addr).await?;
    Ok(Json(Dialled {
        peer_id: peer.to_string(),
    }))
}

/// Stops the node as a signal to `cryptchat run` would (what members lack goes in
/// mailboxes first): answers once it has stopped and its journal is closed, and the
/// process then exits.
async fn stop(State(s): State<AppState>) -> ApiResult<Stopped> {
    s.node.shutdown().await?;
    let me = s.node.identity();
    Ok(Json(Stopped {
        username: me.username().to_string(),
        user_id: me.id().to_hex(),
    }))
}

async fn get_faults(State(s): State<AppState>) -> ApiResult<FaultConfig> {
    Ok(Json(s.node.faults().get()))
}

async fn set_faults(
    State(s): State<AppState>,
    Json(cfg): Json<FaultConfig>,
) -> ApiResult<FaultConfig> {
    cfg.validate()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    s.node.faults().set(cfg);
    Ok(Json(cfg))
}

/// Cuts off or lets back peers (by peer id): simulated partitions.
#[derive(Serialize, Deserialize, Debug)]
pub struct BlockRequest {
    pub peers: Vec<String>,
    pub blocked: bool,
}

async fn block(State(s): State<AppState>, Json(r): Json<BlockRequest>) -> ApiResult<()> {
    let peers = r
        .peers
        .iter()
        .map(|p| {
            p.parse()
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad peer id {p}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(s.node.block(peers, r.blocked).await?))
}

async fn events(
    State(s): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.node.subscribe();
    let node = s.node.clone();
    let events = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let data = serde_json::to_string(&ev).unwrap_or_default();
                    return Some((Ok(SseEvent::default().data(data)), rx));
                }
                // A slow reader missed events: keep going with the newest.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    // Ends when the node stops, so that watchers learn it and the server can close.
    let stream = events.take_until(async move { node.stopped().await });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn page() -> Html<&'static str> {
    Html(include_str!("web/index.html"))
}

#[cfg(test)]
mod tests {
    use super::{TICKET_TTL, Tickets, attachment};
    use std::time::{Duration, Instant};

    #[test]
    fn a_download_ticket_works_once_and_not_after_it_expires() {
        let tickets = Tickets::default();
        let now = Instant::now();
        let a = tickets.issue("ab12", now).unwrap();
        let b = tickets.issue("cd34", now).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(tickets.redeem("", now), None);
        assert_eq!(tickets.redeem(&a[..63], now), None);
        assert_eq!(tickets.redeem(&a, now), Some("ab12"));
        assert_eq!(tickets.redeem(&a, now), None, "used up");
        let later = now + TICKET_TTL + Duration::from_millis(1);
        assert_eq!(tickets.redeem(&b, later), None, "expired");
        // Past the cap the oldest goes.
        let tickets = Tickets::default();
        let first = tickets.issue(0, now).unwrap();
        for i in 1..=super::MAX_TICKETS {
            tickets.issue(i, now).unwrap();
        }
        assert_eq!(tickets.redeem(&first, now), None);
        assert_eq!(tickets.held().len(), super::MAX_TICKETS);
    }

    #[test]
    fn download_names_cannot_break_the_header() {
        assert_eq!(
            attachment("notes v2.txt"),
            "attachment; filename*=UTF-8''notes%20v2.txt"
        );
        let odd = attachment("a\";\r\nSet-Cookie: x=1; é.bin");
        let value = odd.strip_prefix("attachment; filename*=UTF-8''").unwrap();
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&+-.^_`|~".contains(&b)),
            "{odd}"
        );
        assert!(value.ends_with("%C3%A9.bin"));
    }
}

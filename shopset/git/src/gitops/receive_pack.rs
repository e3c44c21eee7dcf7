//! A push of a pack the caller built: git's receive-pack conversation (the ref commands, the
//! pack, the server's report) spoken over libgit2's own transports for git://, HTTP(S) and SSH,
//! with their connections, credentials, proxies, and certificate and host-key checks.
//!
//! libgit2's push cannot be handed a pack. It builds one by first marking every object under the
//! tree of the commit the push builds on as the server's, then walking the new tree: for a branch
//! whose directories list 1,000 ShopSets, most of the cost of a one-ShopSet sync, and growing with
//! the tier. A sync knows which objects it wrote on top of the branch's head; the pack is those.

use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::ptr::null_mut;

use git2::{Oid, RemoteCallbacks};
use libgit2_sys as raw;

// Part of libgit2's public API (`git2/sys/transport.h`, `git2/remote.h`), not declared by
// libgit2-sys.
unsafe extern "C" {
    fn git_smart_subtransport_git(
        out: *mut *mut raw::git_smart_subtransport,
        owner: *mut raw::git_transport,
        param: *mut c_void,
    ) -> c_int;
    fn git_smart_subtransport_http(
        out: *mut *mut raw::git_smart_subtransport,
        owner: *mut raw::git_transport,
        param: *mut c_void,
    ) -> c_int;
    fn git_smart_subtransport_ssh(
        out: *mut *mut raw::git_smart_subtransport,
        owner: *mut raw::git_transport,
        param: *mut c_void,
    ) -> c_int;
    fn git_remote_connect_options_init(opts: *mut raw::git_remote_connect_options, version: c_uint) -> c_int;
}

/// What this client asks of the server: a report of each ref's result, and the server's own
/// messages (hooks' output) on a side band, as git's client asks.
const CAPABILITIES: &str = concat!("report-status side-band-64k agent=shopset/", env!("CARGO_PKG_VERSION"));

/// The transport libgit2 uses for a URL, when it is one this client speaks over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    Git,
    Http,
    Ssh,
}

impl Transport {
    /// None for a URL libgit2 reaches otherwise (a local path, `file://`): pushed by libgit2.
    pub(super) fn of(url: &str) -> Option<Self> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("git") => Some(Transport::Git),
            Some("http" | "https") => Some(Transport::Http),
            Some("ssh" | "ssh+git" | "git+ssh") => Some(Transport::Ssh),
            Some(_) => None,
            // `user@host:path`, as libgit2 reads an scp-like address.
            None => url
                .split_once(':')
                .filter(|(host, _)| host.contains('@') && !host.contains('/'))
                .map(|_| Transport::Ssh),
        }
    }
}

/// One ref command: `old` is what the server must still have (zero: the ref must not exist).
pub(super) struct Command<'a> {
    pub old: Oid,
    pub new: Oid,
    pub refname: &'a str,
}

/// The server's answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Report {
    /// Whether it took the pack: Err with its words when not.
    pub unpack: Result<(), String>,
    /// Each ref's result: None when updated, its reason when refused.
    pub refs: Vec<(String, Option<String>)>,
    /// What it printed on the way (a hook's "remote:" lines).
    pub said: Vec<u8>,
}

/// Connects to `url` to push, shows `check` the refs the server advertises (a push whose lease no
/// longer holds stops there, with None, before anything is sent), then sends `commands` and
/// `pack` and returns the server's report.
pub(super) fn push(
    remote: &mut git2::Remote<'_>,
    url: &str,
    transport: Transport,
    callbacks: &RemoteCallbacks<'_>,
    check: impl FnOnce(&[(String, Oid)]) -> bool,
    commands: &[Command<'_>],
    pack: &[u8],
) -> Result<Option<Report>, git2::Error> {
    use git2::Binding;
    let c_url = CString::new(url).map_err(|_| git2::Error::from_str("a URL with a NUL byte"))?;
    let session = Session::open(remote.raw(), transport)?;
    // SAFETY: zeroed, then initialised by libgit2 for the version it was built with.
    let mut opts: raw::git_remote_connect_options = unsafe { std::mem::zeroed() };
    check_rc(unsafe { git_remote_connect_options_init(&mut opts, 1) })?;
    // The callbacks' payload points at `callbacks`, which outlives the session (dropped below).
    opts.callbacks = callbacks.raw();
    // As libgit2's own push (git2's default): an HTTP redirect of the first request is followed.
    opts.follow_redirects = raw::GIT_REMOTE_REDIRECT_INITIAL;
    // SAFETY: a transport made by git_transport_smart; libgit2 copies the options it keeps.
    check_rc(unsafe {
        let connect = (*session.transport).connect.ok_or_else(missing)?;
        connect(session.transport, c_url.as_ptr(), raw::GIT_DIRECTION_PUSH as c_int, &opts)
    })?;
    if !check(&session.advertised()?) {
        return Ok(None);
    }
    let mut request = Vec::with_capacity(pack.len() + 128 * commands.len() + 4);
    for (i, c) in commands.iter().enumerate() {
        let caps = if i == 0 { format!("\0{CAPABILITIES}") } else { String::new() };
        pkt_line(&mut request, format!("{} {} {}{caps}\n", c.old, c.new, c.refname).as_bytes());
    }
    request.extend_from_slice(b"0000");
    request.extend_from_slice(pack);
    let stream = session.receive_pack(&c_url)?;
    stream.write(&request)?;
    let mut answer = Answer::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let got = stream.read(&mut buf)?;
        if got == 0 {
            return Err(git2::Error::from_str("the server closed the connection before it reported on the push"));
        }
        if let Some(report) = answer.feed(&buf[..got])? {
            return Ok(Some(report));
        }
    }
}

fn check_rc(rc: c_int) -> Result<(), git2::Error> {
    if rc < 0 { Err(git2::Error::last_error(rc)) } else { Ok(()) }
}

fn missing() -> git2::Error {
    git2::Error::from_str("libgit2's transport lacks a function this push needs")
}

/// A pkt-line: four hex digits of length (their own included), then the bytes.
fn pkt_line(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    out.extend_from_slice(data);
}

/// libgit2's smart transport over the subtransport of one URL scheme, which this client also
/// uses directly: the connection it opened (git://, SSH) or the HTTP client that holds the
/// credentials it was given.
struct Session {
    transport: *mut raw::git_transport,
    subtransport: *mut raw::git_smart_subtransport,
    /// HTTP: each request is a stream of its own (stateless RPC); otherwise one connection.
    rpc: bool,
}

/// Passed through git_transport_smart to [`make_subtransport`].
struct Making {
    transport: Transport,
    made: *mut raw::git_smart_subtransport,
}

extern "C" fn make_subtransport(
    out: *mut *mut raw::git_smart_subtransport,
    owner: *mut raw::git_transport,
    param: *mut c_void,
) -> c_int {
    // SAFETY: `param` is the `Making` of Session::open, alive for the git_transport_smart call
    // that calls this.
    let making = unsafe { &mut *param.cast::<Making>() };
    // SAFETY: libgit2's own constructors, with the owner it passes in.
    let rc = unsafe {
        match making.transport {
            Transport::Git => git_smart_subtransport_git(out, owner, null_mut()),
            Transport::Http => git_smart_subtransport_http(out, owner, null_mut()),
            Transport::Ssh => git_smart_subtransport_ssh(out, owner, null_mut()),
        }
    };
    if rc == 0 {
        // SAFETY: set by the constructor on success.
        making.made = unsafe { *out };
    }
    rc
}

impl Session {
    fn open(owner: *mut raw::git_remote, transport: Transport) -> Result<Self, git2::Error> {
        let mut making = Making { transport, made: null_mut() };
        let rpc = transport == Transport::Http;
        let mut definition = raw::git_smart_subtransport_definition {
            callback: Some(make_subtransport),
            rpc: rpc as c_uint,
            param: (&mut making as *mut Making).cast(),
        };
        let mut out: *mut raw::git_transport = null_mut();
        // SAFETY: `definition` and `making` outlive the call, which is when libgit2 reads them.
        check_rc(unsafe {
            raw::git_transport_smart(
                &mut out,
                owner,
                (&mut definition as *mut raw::git_smart_subtransport_definition).cast(),
            )
        })?;
        let session = Session { transport: out, subtransport: making.made, rpc };
        if session.subtransport.is_null() {
            return Err(missing());
        }
        Ok(session)
    }

    /// The refs the server advertised: (name, id).
    fn advertised(&self) -> Result<Vec<(String, Oid)>, git2::Error> {
        let mut heads: *mut *const raw::git_remote_head = null_mut();
        let mut len = 0usize;
        // SAFETY: a connected transport; the list stays valid until it is closed.
        check_rc(unsafe { ((*self.transport).ls.ok_or_else(missing)?)(&mut heads, &mut len, self.transport) })?;
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            // SAFETY: `len` pointers to heads the transport owns.
            unsafe {
                let head = *heads.add(i);
                if head.is_null() || (*head).name.is_null() {
                    continue;
                }
                let name = std::ffi::CStr::from_ptr((*head).name).to_string_lossy().into_owned();
                out.push((name, Oid::from_bytes(&(*head).oid.id)?));
            }
        }
        Ok(out)
    }

    /// The stream to send the commands and the pack on.
    fn receive_pack(&self, url: &CString) -> Result<Stream, git2::Error> {
        let mut stream: *mut raw::git_smart_subtransport_stream = null_mut();
        // SAFETY: the subtransport the connected transport wraps. For git:// and SSH it hands back
        // the connection the advertisement came on (owned by the transport); for HTTP, a new
        // request of our own.
        check_rc(unsafe {
            let action = (*self.subtransport).action.ok_or_else(missing)?;
            action(&mut stream, self.subtransport, url.as_ptr(), raw::GIT_SERVICE_RECEIVEPACK)
        })?;
        if stream.is_null() {
            return Err(missing());
        }
        Ok(Stream { stream, owned: self.rpc })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the transport git_transport_smart made, closed and freed once (freeing it frees
        // its subtransport too).
        unsafe {
            if let Some(close) = (*self.transport).close {
                close(self.transport);
            }
            if let Some(free) = (*self.transport).free {
                free(self.transport);
            }
        }
    }
}

struct Stream {
    stream: *mut raw::git_smart_subtransport_stream,
    /// Freed here (an HTTP request); otherwise the transport's connection, freed with it.
    owned: bool,
}

impl Stream {
    fn write(&self, bytes: &[u8]) -> Result<(), git2::Error> {
        // SAFETY: a live stream; libgit2 writes all of `bytes` or fails.
        check_rc(unsafe {
            ((*self.stream).write.ok_or_else(missing)?)(self.stream, bytes.as_ptr().cast::<c_char>(), bytes.len())
        })
    }

    fn read(&self, buf: &mut [u8]) -> Result<usize, git2::Error> {
        let mut got = 0usize;
        // SAFETY: a live stream, reading at most `buf.len()` bytes into it.
        check_rc(unsafe {
            ((*self.stream).read.ok_or_else(missing)?)(
                self.stream,
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
                &mut got,
            )
        })?;
        Ok(got)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: a stream the subtransport handed to us alone, freed once.
            unsafe {
                if let Some(free) = (*self.stream).free {
                    free(self.stream);
                }
            }
        }
    }
}

/// The server's answer as it arrives: side-band packets (1: the report, 2: its messages, 3: a
/// fatal error) up to a flush, the report itself pkt-lines up to a flush.
#[derive(Default)]
struct Answer {
    pending: Vec<u8>,
    report: Vec<u8>,
    said: Vec<u8>,
}

impl Answer {
    /// Takes more bytes; the report once the answer is complete.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<Report>, git2::Error> {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        let done = loop {
            let Some((len, payload)) = next_pkt(&self.pending[at..])? else { break false };
            at += len;
            let Some(payload) = payload else { break true };
            match payload.split_first() {
                Some((1, data)) => self.report.extend_from_slice(data),
                Some((2, data)) => self.said.extend_from_slice(data),
                Some((3, data)) => {
                    return Err(git2::Error::from_str(&format!(
                        "the server refused the push: {}",
                        String::from_utf8_lossy(data).trim()
                    )));
                }
                _ => return Err(git2::Error::from_str("the server's answer is not on a side band")),
            }
        };
        self.pending.drain(..at);
        if !done {
            return Ok(None);
        }
        parse_report(&self.report, std::mem::take(&mut self.said)).map(Some)
    }
}

/// A pkt-line read: its length on the wire and its payload (None: a flush).
type Pkt<'a> = (usize, Option<&'a [u8]>);

/// The next pkt-line of `bytes`, or None when it has not all arrived.
fn next_pkt(bytes: &[u8]) -> Result<Option<Pkt<'_>>, git2::Error> {
    let Some(head) = bytes.get(..4) else { return Ok(None) };
    let len = std::str::from_utf8(head)
        .ok()
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .ok_or_else(|| git2::Error::from_str("the server's answer is not in pkt-lines"))?;
    match len {
        0 => Ok(Some((4, None))),
        1..4 => Err(git2::Error::from_str("the server's answer has a pkt-line of a bad length")),
        _ => Ok(bytes.get(4..len).map(|payload| (len, Some(payload)))),
    }
}

/// report-status: `unpack ok` (or its error), then `ok <ref>` or `ng <ref> <reason>` per ref.
fn parse_report(bytes: &[u8], said: Vec<u8>) -> Result<Report, git2::Error> {
    let bad = || git2::Error::from_str("the server's report on the push is not report-status");
    let mut report = Report { unpack: Err("no report".into()), refs: Vec::new(), said };
    let mut rest = bytes;
    let mut first = true;
    while let Some((len, payload)) = next_pkt(rest)? {
        rest = &rest[len..];
        let Some(payload) = payload else { break };
        let line = String::from_utf8_lossy(payload);
        let line = line.trim_end_matches('\n');
        if first {
            let status = line.strip_prefix("unpack ").ok_or_else(bad)?;
            report.unpack = if status == "ok" { Ok(()) } else { Err(status.to_string()) };
            first = false;
        } else if let Some(refname) = line.strip_prefix("ok ") {
            report.refs.push((refname.to_string(), None));
        } else if let Some(ng) = line.strip_prefix("ng ") {
            let (refname, reason) = ng.split_once(' ').unwrap_or((ng, "refused"));
            report.refs.push((refname.to_string(), Some(reason.to_string())));
        } else {
            return Err(bad());
        }
    }
    if first {
        return Err(bad());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::ObjectType;

    fn band(n: u8, data: &[u8]) -> Vec<u8> {
        let mut payload = vec![n];
        payload.extend_from_slice(data);
        let mut out = Vec::new();
        pkt_line(&mut out, &payload);
        out
    }

    fn report_lines(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            pkt_line(&mut out, format!("{l}\n").as_bytes());
        }
        out.extend_from_slice(b"0000");
        out
    }

    #[test]
    fn urls_are_pushed_over_the_transport_libgit2_would_use() {
        assert_eq!(Transport::of("git://127.0.0.1:9418/system"), Some(Transport::Git));
        assert_eq!(Transport::of("https://git.example.com/acme/system.git"), Some(Transport::Http));
        assert_eq!(Transport::of("http://127.0.0.1:8080/system"), Some(Transport::Http));
        assert_eq!(Transport::of("ssh://git@127.0.0.1:2222/srv/system"), Some(Transport::Ssh));
        assert_eq!(Transport::of("git@github.com:acme/system.git"), Some(Transport::Ssh));
        assert_eq!(Transport::of("/srv/git/system"), None);
        assert_eq!(Transport::of("file:///srv/git/system"), None);
        assert_eq!(Transport::of("C:/git/system"), None);
    }

    /// The answer may arrive in pieces of any size; the report is read once the side band ends.
    #[test]
    fn a_report_on_a_side_band_is_read_in_any_pieces() {
        let mut wire = band(2, b"remote: hook ran\n");
        wire.extend(band(
            1,
            &report_lines(&["unpack ok", "ok refs/heads/tier-0", "ng refs/heads/tier-1 failed to lock"]),
        ));
        wire.extend_from_slice(b"0000");
        for piece in [1, 3, 7, wire.len()] {
            let mut answer = Answer::default();
            let mut report = None;
            for chunk in wire.chunks(piece) {
                assert!(report.is_none(), "read on after the end");
                report = answer.feed(chunk).expect("a good answer");
            }
            let report = report.expect("complete");
            assert_eq!(report.unpack, Ok(()));
            assert_eq!(
                report.refs,
                vec![
                    ("refs/heads/tier-0".to_string(), None),
                    ("refs/heads/tier-1".to_string(), Some("failed to lock".to_string()))
                ]
            );
            assert_eq!(report.said, b"remote: hook ran\n");
        }
    }

    /// libgit2's indexer (as git's index-pack on a server) takes the pack whole, every object
    /// under its id, large and small.
    #[test]
    fn a_pack_of_held_bytes_indexes_as_git_reads_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init_bare(dir.path()).expect("init");
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()).collect();
        let objects: Vec<(ObjectType, Vec<u8>)> = vec![
            (ObjectType::Blob, b"".to_vec()),
            (ObjectType::Blob, b"apiVersion: v1\n".to_vec()),
            (ObjectType::Blob, big),
            (
                ObjectType::Tree,
                b"100644 a\0\xe6\x9d\xe2\x9b\xb2\xd1\xd6\x43\x4b\x8b\x29\xae\x77\x5a\xd8\xc2\xe4\x8c\x53\x91".to_vec(),
            ),
        ];
        let held: Vec<(ObjectType, &[u8])> = objects.iter().map(|(k, b)| (*k, &b[..])).collect();
        let bytes = super::super::packfile::build(&held).expect("pack").bytes;
        let odb = repo.odb().expect("odb");
        let mut writer = odb.packwriter().expect("packwriter");
        std::io::Write::write_all(&mut writer, &bytes).expect("write");
        writer.commit().expect("an intact pack");
        for (kind, data) in &objects {
            let id = git2::Oid::hash_object(*kind, data).expect("hash");
            let stored = odb.read(id).expect("the object is in the pack");
            assert_eq!((stored.kind(), stored.data()), (*kind, &data[..]));
        }
    }

    #[test]
    fn a_pack_the_server_could_not_unpack_is_reported() {
        let mut wire = band(1, &report_lines(&["unpack index-pack abnormal exit", "ng refs/heads/x unpacker error"]));
        wire.extend_from_slice(b"0000");
        let report = Answer::default().feed(&wire).expect("an answer").expect("complete");
        assert_eq!(report.unpack, Err("index-pack abnormal exit".into()));
    }

    #[test]
    fn a_fatal_error_or_garbage_is_an_error() {
        let wire = band(3, b"no space left on device\n");
        let err = Answer::default().feed(&wire).expect_err("fatal");
        assert!(err.message().contains("no space left on device"), "{}", err.message());
        assert!(Answer::default().feed(b"zzzz").is_err());
        assert!(Answer::default().feed(b"0002").is_err());
        let mut not_report = band(1, &report_lines(&["hello"]));
        not_report.extend_from_slice(b"0000");
        assert!(Answer::default().feed(&not_report).is_err());
    }
}

//! libgit2's plain TCP sockets, replaced by ones with `TCP_NODELAY` that acknowledge at once.
//!
//! libgit2 sends a push as two writes, the ref commands and then the pack, and only then waits
//! for the server. Its own sockets keep Nagle's algorithm on, so the pack waits until the server
//! acknowledges the commands, and the server, with nothing to answer yet, delays that
//! acknowledgement: every push stood still for 40 ms (Linux's minimum delayed ACK), more than
//! everything else a one-ShopSet change costs. git's HTTP client (curl) and OpenSSH disable Nagle
//! for the same reason.
//!
//! Every transport opens its socket through the stream registered here: git://, HTTP, HTTPS (the
//! TLS stream wraps this one) and SSH (libssh2 runs on its file descriptor). Behaviour otherwise
//! follows libgit2's default stream: same timeouts, keepalive, error classes and messages.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libgit2_sys as raw;

/// `git_stream` of `git2/sys/stream.h` (version 1).
#[repr(C)]
struct RawStream {
    version: c_int,
    /// The bit fields `encrypted : 1, proxy_support : 1`: both 0 for a plain socket.
    flags: c_uint,
    /// Read/write timeout in milliseconds, 0 for none.
    timeout: c_int,
    /// Connect timeout in milliseconds, 0 for the system's.
    connect_timeout: c_int,
    connect: Option<unsafe extern "C" fn(*mut RawStream) -> c_int>,
    certificate: Option<unsafe extern "C" fn(*mut *mut c_void, *mut RawStream) -> c_int>,
    set_proxy: Option<unsafe extern "C" fn(*mut RawStream, *const c_void) -> c_int>,
    read: Option<unsafe extern "C" fn(*mut RawStream, *mut c_void, usize) -> isize>,
    write: Option<unsafe extern "C" fn(*mut RawStream, *const c_char, usize, c_int) -> isize>,
    close: Option<unsafe extern "C" fn(*mut RawStream) -> c_int>,
    free: Option<unsafe extern "C" fn(*mut RawStream)>,
}

/// Laid out as libgit2's internal `git_socket_stream` (`parent`, `host`, `port`, `s`): its SSH
/// transport takes the socket's descriptor from `s` through that layout.
#[repr(C)]
struct SocketStream {
    parent: RawStream,
    host: *mut c_char,
    port: *mut c_char,
    s: c_int,
    socket: Option<TcpStream>,
}

/// `git_stream_registration`.
#[repr(C)]
struct Registration {
    version: c_int,
    init: Option<unsafe extern "C" fn(*mut *mut RawStream, *const c_char, *const c_char) -> c_int>,
    wrap: Option<unsafe extern "C" fn(*mut *mut RawStream, *mut RawStream, *const c_char) -> c_int>,
}

const GIT_STREAM_VERSION: c_int = 1;
const GIT_STREAM_STANDARD: c_int = 1;

unsafe extern "C" {
    fn git_stream_register(kind: c_int, registration: *mut Registration) -> c_int;
    /// The values `GIT_OPT_SET_SERVER_TIMEOUT` and `GIT_OPT_SET_SERVER_CONNECT_TIMEOUT` set.
    static git_socket_stream__timeout: c_int;
    static git_socket_stream__connect_timeout: c_int;
}

static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static WITH_NAGLE: AtomicU64 = AtomicU64::new(0);

/// Makes libgit2 open its sockets here. Called once, by the git engine's process-wide set-up.
pub fn install() {
    raw::init();
    let mut registration = Registration { version: GIT_STREAM_VERSION, init: Some(stream_new), wrap: None };
    // SAFETY: libgit2 is initialised, and it copies the registration before returning.
    let rc = unsafe { git_stream_register(GIT_STREAM_STANDARD, &mut registration) };
    if rc != 0 {
        // libgit2's own sockets still work, only with the delayed pack.
        tracing::warn!(rc, "cannot register ShopSet's socket stream with libgit2; pushes keep Nagle's delay");
    }
}

/// Connections opened through this stream since the process started.
pub fn connections() -> u64 {
    CONNECTIONS.load(Ordering::Relaxed)
}

/// Of those, the ones whose socket reads back with Nagle's algorithm on (TCP_NODELAY off).
pub fn connections_with_nagle() -> u64 {
    WITH_NAGLE.load(Ordering::Relaxed)
}

fn set_error(class: raw::git_error_t, message: &str) {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: a valid C string; libgit2 copies it.
    unsafe {
        raw::git_error_set_str(class as c_int, message.as_ptr());
    }
}

fn millis(ms: c_int) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

unsafe extern "C" fn stream_new(out: *mut *mut RawStream, host: *const c_char, port: *const c_char) -> c_int {
    if out.is_null() || host.is_null() || port.is_null() {
        set_error(raw::GIT_ERROR_INVALID, "socket stream: missing host or port");
        return -1;
    }
    // SAFETY: libgit2 passes NUL-terminated strings, valid for this call; they are copied.
    let (host, port) = unsafe { (CStr::from_ptr(host).to_owned(), CStr::from_ptr(port).to_owned()) };
    let stream = Box::new(SocketStream {
        parent: RawStream {
            version: GIT_STREAM_VERSION,
            flags: 0,
            // SAFETY: plain ints that libgit2 only writes while setting options.
            timeout: unsafe { git_socket_stream__timeout },
            connect_timeout: unsafe { git_socket_stream__connect_timeout },
            connect: Some(stream_connect),
            certificate: None,
            set_proxy: None,
            read: Some(stream_read),
            write: Some(stream_write),
            close: Some(stream_close),
            free: Some(stream_free),
        },
        host: host.into_raw(),
        port: port.into_raw(),
        s: -1,
        socket: None,
    });
    // SAFETY: `out` is valid for a write; `parent` is the first field, so the pointers coincide.
    unsafe { *out = Box::into_raw(stream).cast::<RawStream>() };
    0
}

/// The stream behind libgit2's pointer.
///
/// SAFETY: `stream` must come from [`stream_new`] and not be freed.
unsafe fn this<'a>(stream: *mut RawStream) -> &'a mut SocketStream {
    unsafe { &mut *stream.cast::<SocketStream>() }
}

unsafe extern "C" fn stream_connect(stream: *mut RawStream) -> c_int {
    // SAFETY: libgit2 calls this on a stream of ours.
    let st = unsafe { this(stream) };
    // SAFETY: set in `stream_new`, freed only in `stream_free`.
    let (host, port) = unsafe {
        (CStr::from_ptr(st.host).to_string_lossy().into_owned(), CStr::from_ptr(st.port).to_string_lossy().into_owned())
    };
    let Ok(port_number) = port.parse::<u16>() else {
        set_error(raw::GIT_ERROR_NET, &format!("failed to resolve address for {host}: port {port:?} is not a number"));
        return -1;
    };
    let addrs = match (host.as_str(), port_number).to_socket_addrs() {
        Ok(addrs) => addrs,
        Err(e) => {
            set_error(raw::GIT_ERROR_NET, &format!("failed to resolve address for {host}: {e}"));
            return -1;
        }
    };
    let mut last = None;
    for addr in addrs {
        let attempt = match millis(st.parent.connect_timeout) {
            Some(limit) => TcpStream::connect_timeout(&addr, limit),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(socket) => {
                return match configure(&socket, st.parent.timeout) {
                    Ok(()) => {
                        st.s = socket.as_raw_fd();
                        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                        if !socket.nodelay().unwrap_or(false) {
                            WITH_NAGLE.fetch_add(1, Ordering::Relaxed);
                        }
                        st.socket = Some(socket);
                        0
                    }
                    Err(e) => {
                        set_error(raw::GIT_ERROR_OS, &format!("failed to configure the socket to {host}: {e}"));
                        -1
                    }
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                set_error(raw::GIT_ERROR_NET, &format!("failed to connect to {host}: Operation timed out"));
                return -1;
            }
            Err(e) => last = Some(e),
        }
    }
    let why = last.map(|e| format!(": {e}")).unwrap_or_default();
    set_error(raw::GIT_ERROR_OS, &format!("failed to connect to {host}{why}"));
    -1
}

/// No Nagle delay; keepalive and timeouts as libgit2's own sockets have them.
fn configure(socket: &TcpStream, timeout: c_int) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    socket.set_read_timeout(millis(timeout))?;
    socket.set_write_timeout(millis(timeout))?;
    let fd = socket.as_raw_fd();
    let set = |level: c_int, name: c_int, value: c_int| {
        // SAFETY: an open socket and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const c_int).cast(),
                std::mem::size_of::<c_int>() as libc::socklen_t,
            )
        }
    };
    // Dead connections are noticed after 60 s idle + 3 probes 10 s apart, as libgit2 does.
    if set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1) == 0 {
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
    }
    Ok(())
}

/// Runs one read or write on the connected socket of `stream`, in libgit2's return convention.
///
/// SAFETY: `stream` must come from [`stream_new`] and not be freed.
unsafe fn transfer(
    stream: *mut RawStream,
    what: &str,
    op: impl FnOnce(&mut TcpStream) -> std::io::Result<usize>,
) -> isize {
    let st = unsafe { this(stream) };
    let Some(socket) = st.socket.as_mut() else {
        set_error(raw::GIT_ERROR_NET, &format!("cannot {what} a socket that is not connected"));
        return -1;
    };
    match op(socket) {
        Ok(n) => n as isize,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            set_error(raw::GIT_ERROR_NET, &format!("could not {what} socket: timed out"));
            raw::GIT_TIMEOUT as isize
        }
        Err(e) => {
            set_error(raw::GIT_ERROR_NET, &format!("error {what} socket: {e}"));
            -1
        }
    }
}

unsafe extern "C" fn stream_read(stream: *mut RawStream, data: *mut c_void, len: usize) -> isize {
    // SAFETY: libgit2 calls this on a stream of ours with a buffer of `len` bytes.
    unsafe {
        transfer(stream, "read from", |socket| {
            quick_ack(socket);
            socket.read(std::slice::from_raw_parts_mut(data.cast::<u8>(), len))
        })
    }
}

/// Acknowledges what arrives at once instead of up to 40 ms later. A server that keeps Nagle's
/// algorithm on (git daemon's upload-pack does) holds its second small answer until the first is
/// acknowledged: a fetch whose client has 20 commits or more negotiates in rounds (libgit2 sends
/// its "have" lines 20 at a time), and each round stood still for the delayed ACK. Linux leaves
/// quick-ack mode on its own, so it is asked for before every read.
fn quick_ack(socket: &TcpStream) {
    let one: c_int = 1;
    // SAFETY: an open socket and a c_int option value of the right size. A failure only means
    // the usual delayed acknowledgement.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const c_int).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        );
    }
}

unsafe extern "C" fn stream_write(stream: *mut RawStream, data: *const c_char, len: usize, _flags: c_int) -> isize {
    // SAFETY: libgit2 calls this on a stream of ours with `len` readable bytes.
    unsafe { transfer(stream, "write to", |socket| socket.write(std::slice::from_raw_parts(data.cast::<u8>(), len))) }
}

unsafe extern "C" fn stream_close(stream: *mut RawStream) -> c_int {
    // SAFETY: libgit2 calls this on a stream of ours.
    let st = unsafe { this(stream) };
    st.socket = None;
    st.s = -1;
    0
}

unsafe extern "C" fn stream_free(stream: *mut RawStream) {
    if stream.is_null() {
        return;
    }
    // SAFETY: made by `stream_new` with Box::into_raw; libgit2 frees a stream once.
    let st = unsafe { Box::from_raw(stream.cast::<SocketStream>()) };
    // SAFETY: made by CString::into_raw in `stream_new`.
    unsafe {
        drop(CString::from_raw(st.host));
        drop(CString::from_raw(st.port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    unsafe extern "C" {
        fn shopset_git_stream_size() -> usize;
        fn shopset_git_stream_connect_offset() -> usize;
        fn shopset_git_stream_free_offset() -> usize;
        fn shopset_git_stream_registration_size() -> usize;
        fn shopset_git_stream_version() -> c_int;
        fn shopset_git_stream_standard() -> c_int;
    }

    /// The public part, against libgit2's own header (compiled by build.rs from stream_layout.c).
    #[test]
    fn stream_layout_matches_libgit2s_header() {
        // SAFETY: plain functions of our C shim returning constants.
        unsafe {
            assert_eq!(std::mem::size_of::<RawStream>(), shopset_git_stream_size());
            assert_eq!(std::mem::offset_of!(RawStream, connect), shopset_git_stream_connect_offset());
            assert_eq!(std::mem::offset_of!(RawStream, free), shopset_git_stream_free_offset());
            assert_eq!(std::mem::size_of::<Registration>(), shopset_git_stream_registration_size());
            assert_eq!(GIT_STREAM_VERSION, shopset_git_stream_version());
            assert_eq!(GIT_STREAM_STANDARD, shopset_git_stream_standard());
        }
        // `git_socket_stream` is internal to libgit2 (no header to compile against): `parent`,
        // then `host`, `port` and `s`, as in the libgit2 that the exactly pinned libgit2-sys bundles.
        assert_eq!(std::mem::offset_of!(SocketStream, host), std::mem::size_of::<RawStream>());
        assert_eq!(std::mem::offset_of!(SocketStream, s), std::mem::size_of::<RawStream>() + 2 * 8);
    }

    fn nodelay(fd: c_int) -> c_int {
        let mut value: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, (&mut value as *mut c_int).cast(), &mut len)
        };
        assert_eq!(rc, 0);
        value
    }

    #[test]
    fn connects_without_nagle_and_moves_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = CString::new(listener.local_addr().unwrap().port().to_string()).unwrap();
        let host = CString::new("127.0.0.1").unwrap();
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            peer.read_exact(&mut buf).unwrap();
            peer.write_all(b"pong").unwrap();
            buf
        });
        let mut out: *mut RawStream = std::ptr::null_mut();
        unsafe {
            assert_eq!(stream_new(&mut out, host.as_ptr(), port.as_ptr()), 0);
            assert_eq!(((*out).connect.unwrap())(out), 0);
            let fd = this(out).s;
            assert!(fd >= 0);
            assert_eq!(nodelay(fd), 1, "TCP_NODELAY is off");
            assert_eq!(((*out).write.unwrap())(out, b"ping!".as_ptr().cast(), 5, 0), 5);
            let mut buf = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                let n = ((*out).read.unwrap())(out, buf[got..].as_mut_ptr().cast(), 4 - got);
                assert!(n > 0);
                got += n as usize;
            }
            assert_eq!(&buf, b"pong");
            assert_eq!(((*out).close.unwrap())(out), 0);
            ((*out).free.unwrap())(out);
        }
        assert_eq!(&server.join().unwrap(), b"ping!");
    }

    #[test]
    fn a_refused_connection_is_an_os_error_naming_the_host() {
        // libgit2 keeps errors only once initialised, as `install` does first in the product.
        raw::init();
        // A port nobody listens on: bind, read the port, close.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (host, port) = (CString::new("127.0.0.1").unwrap(), CString::new(port.to_string()).unwrap());
        let mut out: *mut RawStream = std::ptr::null_mut();
        unsafe {
            assert_eq!(stream_new(&mut out, host.as_ptr(), port.as_ptr()), 0);
            assert_eq!(((*out).connect.unwrap())(out), -1);
            ((*out).free.unwrap())(out);
        }
        let err = git2::Error::last_error(-1);
        assert_eq!(err.class(), git2::ErrorClass::Os);
        assert!(err.message().starts_with("failed to connect to 127.0.0.1"), "{}", err.message());
    }
}

//! The CA certificates HTTPS remotes are checked against, read when a process first needs them.
//!
//! libgit2 sets up OpenSSL when it starts, and OpenSSL 3 then parses its whole CA bundle file
//! (`SSL_CERT_FILE`, else its default file): about 20-30 ms of CPU, a fifth of a short `shopctl`
//! run that may never speak HTTPS. [`start_libgit2_deferring_ca_file`] starts libgit2 with that
//! file out of its sight and remembers which file it was; [`before_connect`] hands the same file
//! to libgit2 before the process's first HTTP(S) connection. The certificates trusted stay the
//! same: that file, and OpenSSL's certificate directory (`SSL_CERT_DIR`), which it reads per
//! certificate when needed and so is set up at start as before.

use std::ffi::{CStr, OsString};
use std::path::PathBuf;
use std::sync::{Once, OnceLock};

/// The CA file OpenSSL would have read at libgit2's start, when that was deferred.
static DEFERRED: OnceLock<PathBuf> = OnceLock::new();
static LOADED: Once = Once::new();

/// The variable OpenSSL reads its CA file's path from.
const CA_FILE_VARIABLE: &str = "SSL_CERT_FILE";

/// Starts libgit2 (and ShopSet's settings of it) without reading the CA file, which
/// [`before_connect`] reads before the first HTTP(S) connection. For short-lived processes, such
/// as `shopctl`; a long-running one pays the parse once and need not call this.
///
/// # Safety
/// It sets an environment variable for the duration of libgit2's start and restores it after:
/// call it before the process starts any other thread, as for [`std::env::set_var`].
pub unsafe fn start_libgit2_deferring_ca_file() {
    let original = std::env::var_os(CA_FILE_VARIABLE);
    let file = original.clone().map(PathBuf::from).unwrap_or_else(openssl_default_ca_file);
    // A path that names no file: OpenSSL skips a CA file it cannot read, without an error.
    let unreadable: OsString = "/nonexistent/shopset-ca-file-read-on-first-https-connection".into();
    // SAFETY: the caller runs no other thread yet (this function's contract).
    unsafe { std::env::set_var(CA_FILE_VARIABLE, &unreadable) };
    super::cache::configure_libgit2();
    // The git2 crate's start sets the variable to a CA file it finds when the one named does not
    // exist, as ours does not. Leave it as it would have been: the original when that exists or
    // git2 found none, else what git2 found.
    let git2_found = std::env::var_os(CA_FILE_VARIABLE).is_some_and(|now| now != unreadable);
    let original_exists = original.as_ref().is_some_and(|v| std::path::Path::new(v).exists());
    // SAFETY: as above.
    unsafe {
        match &original {
            Some(value) if original_exists || !git2_found => std::env::set_var(CA_FILE_VARIABLE, value),
            None if !git2_found => std::env::remove_var(CA_FILE_VARIABLE),
            _ => {}
        }
    }
    let _ = DEFERRED.set(file);
}

/// Before a connection to `url`: over HTTP(S), the deferred CA file is handed to libgit2 first,
/// once per process (plain HTTP too, as a server may redirect it to HTTPS). Every remote of the
/// git engine is opened through here, so no TLS handshake can start before the file is read.
pub(crate) fn before_connect(url: &str) {
    let http = url.get(..4).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http"));
    let Some(file) = DEFERRED.get().filter(|_| http) else {
        return;
    };
    LOADED.call_once(|| {
        // SAFETY: under the Once, and every HTTP(S) connection of the process waits for it.
        match unsafe { git2::opts::set_ssl_cert_file(file.as_path()) } {
            Ok(()) => tracing::debug!(file = %file.display(), "CA file read for HTTP(S) remotes"),
            // As at libgit2's own start: a CA file that cannot be read leaves the directory.
            Err(e) => tracing::debug!(file = %file.display(), error = %e, "CA file not read"),
        }
    });
}

/// OpenSSL's compiled-in CA file (`OPENSSLDIR/cert.pem`).
fn openssl_default_ca_file() -> PathBuf {
    // SAFETY: returns a pointer to a static NUL-terminated string (or null).
    let ptr = unsafe { openssl_sys::X509_get_default_cert_file() };
    if ptr.is_null() {
        return PathBuf::new();
    }
    // SAFETY: non-null, static and NUL-terminated.
    let path = unsafe { CStr::from_ptr(ptr) };
    PathBuf::from(path.to_string_lossy().into_owned())
}

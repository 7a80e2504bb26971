//! External programs some tests need (promtool, prometheus, nats-server, docker). A test asks
//! [`require`] for one: present, it gets the path; absent, the test prints one line naming what
//! to install and returns early. `FFD_TEST_REQUIRE_TOOLS=1` (set by `.ci/run`, which installs
//! them) turns an absent program into a failure, so CI never skips silently.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The variable that makes a missing program fail the test instead of skipping it.
pub const REQUIRE_VAR: &str = "FFD_TEST_REQUIRE_TOOLS";

/// The program `name` on `PATH`, or `None` after printing why the calling test is skipped.
/// `install` says where the program comes from, e.g. "the Debian package `prometheus`".
///
/// # Panics
/// When the program is absent and [`REQUIRE_VAR`] is `1`.
#[track_caller]
pub fn require(name: &str, install: &str) -> Option<PathBuf> {
    if let Some(path) = find(name) {
        return Some(path);
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    if std::env::var(REQUIRE_VAR).as_deref() == Ok("1") {
        panic!("{test}: needs `{name}` (install {install}); {REQUIRE_VAR}=1 forbids skipping");
    }
    // Straight to the stderr handle: the test harness captures `println!`/`eprintln!` of
    // passing tests, and a skip nobody sees is a silent one.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test}: needs `{name}` (install {install})"
    );
    None
}

/// The first executable `name` in the directories of `PATH`.
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

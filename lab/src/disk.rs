//! Full disks. As root the lab moves itself into a mount namespace of its own (before any
//! thread starts, like the network), where each node of a disk run gets a small tmpfs as its
//! disk; filling that tmpfs is the fault. The mounts exist only in the lab's namespace, which
//! the kernel removes with the last process in it, so nothing is left mounted even when the
//! lab is killed, and nothing outside it ever sees them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Size of each node's disk in a disk run.
const DISK_MB: u64 = 512;
/// Name of the file that fills a disk, next to the node's data folder.
const FILLER: &str = "filler";

/// Moves the calling process into a private mount namespace. Must run before any other
/// thread starts. Returns why not, when it cannot.
pub fn setup() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root: disk runs are skipped".into());
    }
    // SAFETY: unshare(2) and mount(2) on the calling, single-threaded process; the C strings
    // are static and NUL-terminated.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Some(format!("no mount namespace ({}): disk runs are skipped", std::io::Error::last_os_error()));
        }
        // Mounts made from here on stay in this namespace.
        let root = c"/".as_ptr();
        if libc::mount(std::ptr::null(), root, std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0
        {
            return Some(format!("mounts not private ({}): disk runs are skipped", std::io::Error::last_os_error()));
        }
    }
    None
}

/// Mounts a fresh tmpfs of [`DISK_MB`] at `dir` (created) and returns the data folder
/// inside it.
pub fn mount(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    let options = std::ffi::CString::new(format!("size={DISK_MB}m,mode=0700"))?;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"synod-lab".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!("mounting a tmpfs at {}: {}", dir.display(), std::io::Error::last_os_error());
    }
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    Ok(data)
}

/// Unmounts a disk [`mount`] made (its data is gone with it).
pub fn unmount(dir: &Path) {
    if let Ok(target) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) {
        // SAFETY: umount2(2) with a NUL-terminated string that outlives the call.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Fills the disk that holds `data` (a folder [`mount`] returned) up to its last byte.
pub fn fill(data: &Path) -> Result<()> {
    let disk = data.parent().context("the disk of a data folder")?;
    let mut f = std::fs::File::create(disk.join(FILLER))?;
    let chunk = vec![0u8; 1 << 20];
    let mut size = chunk.len();
    loop {
        match f.write(&chunk[..size]) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && size > 1 => size /= 2,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Frees what [`fill`] took.
pub fn free(data: &Path) -> Result<()> {
    let disk = data.parent().context("the disk of a data folder")?;
    match std::fs::remove_file(disk.join(FILLER)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_disk_refuses_writes_until_freed() {
        if setup().is_some() {
            eprintln!("not root: the disk test needs a mount namespace and is skipped");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let data = mount(&dir.path().join("disk")).expect("mount");
        fill(&data).expect("fill");
        let err = std::fs::write(data.join("x"), vec![1u8; 64 * 1024]).expect_err("the disk is full");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        free(&data).expect("free");
        std::fs::write(data.join("x"), vec![1u8; 64 * 1024]).expect("room again");
    }
}

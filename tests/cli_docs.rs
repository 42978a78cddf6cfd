//! `snapfs completions bash|zsh|fish` and `snapfs man [--dir DIR]`: generated from the same
//! definitions as the parser, so every command is in them.

mod common;

use std::process::{Command, Stdio};

use common::{run, snapfs, snapfs_bin};

#[test]
fn completions_cover_every_command_and_bash_parses_them() {
    for shell in ["bash", "zsh", "fish"] {
        let out = snapfs(["completions", shell]);
        let text = out.ok().to_string();
        for word in [
            "snapshots",
            "containers",
            "history",
            "diff",
            "fsck",
            "container",
        ] {
            assert!(
                text.contains(word),
                "{shell}: no {word:?} in the completions"
            );
        }
    }
    let script = snapfs(["completions", "bash"]).ok().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("snapfs.bash");
    std::fs::write(&file, &script).expect("write");
    let check = run(Command::new("bash").arg("-n").arg(&file));
    assert!(check.success(), "bash -n: {}", check.describe());
    snapfs(["completions", "tcsh"]).assert_one_line_error();
}

#[test]
fn man_pages_for_every_command() {
    let page = snapfs(["man"]).ok().to_string();
    assert!(page.contains(".TH snapfs 1"), "{page}");
    assert!(
        page.contains("snapfs\\-history"),
        "the subcommands are listed"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("man1");
    snapfs(["man", "--dir", &out.to_string_lossy()]).ok();
    for name in [
        "snapfs.1",
        "snapfs-mount.1",
        "snapfs-history.1",
        "snapfs-snapshots-diff.1",
        "snapfs-containers-copy.1",
    ] {
        let text = std::fs::read_to_string(out.join(name)).expect(name);
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{name}");
    }
    // The hidden mount helper gets no page.
    assert!(!out.join("snapfs-mount-helper.1").exists());
}

/// A reader that goes away early (`snapfs completions bash | head -1`) is not an error.
#[test]
fn closed_stdout_is_not_an_error() {
    for args in [&["completions", "bash"][..], &["man"][..]] {
        let mut child = Command::new(snapfs_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{args:?}: {out:?}"
        );
    }
}

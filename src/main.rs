//! `snapfs` command line: everything lives in `snapfs::cli` (also the `mount.fuse.snapfs`
//! helper, chosen by the name the binary is run under).

fn main() -> std::process::ExitCode {
    snapfs::cli::main()
}

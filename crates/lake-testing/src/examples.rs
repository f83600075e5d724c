//! The repository's example pipelines, copied for a test or a benchmark.

use std::path::Path;

/// A copy of `examples/<name>` (lake.toml and data, without a `lake/` folder of an earlier run)
/// in a new temporary folder.
pub fn example(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name),
        dir.path(),
    );
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for e in std::fs::read_dir(from).expect("read the example") {
        let e = e.expect("an entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("its type").is_dir() {
            if e.file_name() != "lake" {
                copy_dir(&e.path(), &target);
            }
        } else {
            std::fs::copy(e.path(), target).expect("copy a file");
        }
    }
}

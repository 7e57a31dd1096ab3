use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // The migrations are embedded at compile time: rebuild when they change.
    println!("cargo:rerun-if-changed=migrations");
    // Their `up.sql`, each with its folder's name, for the script that
    // `export-migrations` prints (diesel keeps the embedded text private).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("the migrations folder")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("up.sql").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut code = String::from("&[\n");
    for name in names {
        let up = dir.join(&name).join("up.sql");
        writeln!(code, "    ({name:?}, include_str!({:?})),", up.display()).unwrap();
    }
    code.push(']');
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("migration_sql.rs");
    std::fs::write(out, code).expect("writing migration_sql.rs");
}

//! Every shipped config file loads, and every invalid fixture fails with the
//! message its first line promises (`# expect: <substring>`).

use std::fs;
use std::path::{Path, PathBuf};

use wovenet_daemon::config::load_file;

fn root() -> PathBuf {
    // daemon/ is one level below the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind)
}

/// Every `*.yaml` below `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn assert_all_load(files: &[PathBuf]) {
    assert!(!files.is_empty(), "no config files found");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| load_file(f).err().map(|e| format!("{}:\n{e}", f.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "configs failed to load:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn every_example_site_config_loads() {
    let files = yaml_files(&root().join("examples"));
    // The original's five use cases (eleven site configs) and sites behind NAT (two).
    assert!(
        files.len() >= 13,
        "found only {} example configs",
        files.len()
    );
    assert_all_load(&files);
}

#[test]
fn every_example_has_a_readme() {
    let dirs: Vec<PathBuf> = fs::read_dir(root().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    // The original's use cases, sites behind NAT, and the systemd unit.
    assert_eq!(
        dirs.len(),
        7,
        "expected seven example directories: {dirs:?}"
    );
    for d in dirs {
        assert!(
            d.join("README.md").is_file(),
            "{} has no README.md",
            d.display()
        );
    }
}

#[test]
fn the_reference_config_loads_without_warnings() {
    let config = load_file(&root().join("config.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        config.warnings.is_empty(),
        "warnings: {:?}",
        config.warnings
    );
}

#[test]
fn the_reference_config_shows_bandwidth_limits_on_both_app_kinds() {
    let config = load_file(&root().join("config.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let limit = |l: Option<wovenet_daemon::config::BandwidthLimit>| l.map(|l| l.to_string());
    assert_eq!(
        limit(config.exposed_apps[0].bandwidth_limit).as_deref(),
        Some("10MiB/s")
    );
    assert_eq!(
        limit(config.remote_apps[0].bandwidth_limit).as_deref(),
        Some("100Mbit/s")
    );
}

#[test]
fn every_valid_fixture_loads() {
    assert_all_load(&yaml_files(&fixtures("valid")));
}

#[test]
fn the_original_reference_config_loads_with_only_the_restful_api_warning() {
    let config = load_file(&fixtures("valid").join("original-config.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].starts_with("restfulApi:"));
}

#[test]
fn every_invalid_fixture_fails_with_its_expected_message() {
    let files = yaml_files(&fixtures("invalid"));
    assert!(
        files.len() >= 12,
        "found only {} invalid fixtures",
        files.len()
    );
    let mut problems = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).expect("readable fixture");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks a first line '# expect: <substring>'", f.display()))
            .trim();
        match load_file(f) {
            Ok(_) => problems.push(format!(
                "{}: loaded, expected an error with {expect:?}",
                f.display()
            )),
            Err(e) if !e.to_string().contains(expect) => problems.push(format!(
                "{}: error does not contain {expect:?}:\n{e}",
                f.display()
            )),
            Err(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

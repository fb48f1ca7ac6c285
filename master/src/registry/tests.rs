//! Store tests: round trips, conflicting writers and corruption, for the fake and the file store. (The ZooKeeper
//! store is tested against a real server in `integration-tests/tests/ha.rs`.)

use super::*;

fn sample() -> Registry {
    let mut r = Registry::default();
    r.agents.insert("m-S0".into(), AdmittedAgent { hostname: "h0".into(), port: 5051 });
    r.unreachable.insert("m-S1".into(), 1_700_000_000.5);
    r.removed.insert("m-S2".into());
    r.frameworks.insert("m-0000".into(), RegisteredFramework { name: "web".into(), failover_timeout: 60.0 });
    r
}

fn block<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
}

#[test]
fn envelope_round_trips_and_detects_corruption() {
    let bytes = encode(&sample(), 7);
    let (r, v) = decode(&bytes, "t").unwrap();
    assert_eq!((r, v), (sample(), 7));
    // Change one agent's port inside otherwise valid JSON: the checksum no longer matches.
    let tampered = String::from_utf8(bytes.clone()).unwrap().replace("5051", "5052");
    let err = decode(tampered.as_bytes(), "t").unwrap_err();
    assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    let err = decode(&bytes[..bytes.len() / 2], "t").unwrap_err();
    assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
}

#[test]
fn memory_store_refuses_a_conflicting_writer() {
    let mut a = MemoryStore::new();
    let mut b = a.clone();
    block(async {
        assert_eq!(a.fetch().await.unwrap(), Registry::default());
        assert_eq!(b.fetch().await.unwrap(), Registry::default());
        a.store(&sample()).await.unwrap();
        // b read version 0; a wrote version 1 since: b's write is refused and nothing changes.
        let err = b.store(&Registry::default()).await.unwrap_err();
        assert!(matches!(err, RegistryError::Conflict { .. }), "{err}");
        assert_eq!(a.fetch().await.unwrap(), sample());
        // After reading again, b may write.
        b.fetch().await.unwrap();
        b.store(&Registry::default()).await.unwrap();
        assert_eq!(a.fetch().await.unwrap(), Registry::default());
    });
}

#[test]
fn file_store_writes_atomically_and_refuses_conflicts_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = FileStore::new(dir.path());
    let mut b = FileStore::new(dir.path());
    block(async {
        assert_eq!(a.fetch().await.unwrap(), Registry::default());
        a.store(&sample()).await.unwrap();
        a.store(&sample()).await.unwrap();
        assert_eq!(b.fetch().await.unwrap(), sample());
        // No temporary file is left behind.
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, vec!["registry.json".to_string()]);

        b.store(&Registry::default()).await.unwrap();
        let err = a.store(&sample()).await.unwrap_err();
        assert!(matches!(err, RegistryError::Conflict { .. }), "{err}");
        assert_eq!(FileStore::new(dir.path()).fetch().await.unwrap(), Registry::default());

        // Corrupt the file: loading reports it, and writing does not paper over it.
        let path = dir.path().join("registry.json");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"frameworks\":{}", "\"frameworks\":{\"x\":{\"name\":\"evil\",\"failover_timeout\":1.0}}");
        assert!(text.contains("evil"));
        std::fs::write(&path, &text).unwrap();
        let err = FileStore::new(dir.path()).fetch().await.unwrap_err();
        assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
        let err = b.store(&sample()).await.unwrap_err();
        assert!(matches!(err, RegistryError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    });
}

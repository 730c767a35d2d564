//! The file backend against real files: reopening, torn lines,
//! compaction, the day's count, and files this broker could not have
//! written.

use super::journal::COMPACTION_SLACK;
use super::*;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn record(appid: &str, refresh: &str) -> AuthorizerRecord {
    AuthorizerRecord {
        appid: appid.into(),
        refresh_token: refresh.into(),
        access_token: format!("at-{appid}"),
        expires_at_ms: 10,
        fetched_at_ms: 5,
        authorized_at: 1,
        name: String::new(),
    }
}

#[tokio::test]
async fn the_journal_survives_reopening_and_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
    store
        .save_authorizers(&[record("a", "r1"), record("b", "r1")])
        .await
        .unwrap();
    store.save_authorizers(&[record("a", "r2")]).await.unwrap();
    store.remove_authorizer("b").await.unwrap();
    assert!(store.save_authorizers(&[record("a", "")]).await.is_err());
    let mut file = OpenOptions::new()
        .append(true)
        .open(store.journal_path())
        .unwrap();
    file.write_all(b"{\"op\":\"put\",\"appid\":\"a\",\"refr")
        .unwrap();
    let reopened = FilePlatformStore::new(dir.path(), "saas", "wxc");
    let all = reopened.load_authorizers().await.unwrap();
    assert_eq!(all, vec![record("a", "r2")]);
    let mode = std::fs::metadata(store.journal_path()).unwrap().mode();
    assert_eq!(mode & 0o777, 0o600);
    let foreign = FilePlatformStore::new(dir.path(), "saas", "wxother");
    assert!(foreign.load_authorizers().await.unwrap().is_empty());
}

#[tokio::test]
async fn compaction_keeps_exactly_the_live_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
    for round in 0..(COMPACTION_SLACK + 10) {
        store
            .save_authorizers(&[record("a", &format!("r{round}"))])
            .await
            .unwrap();
    }
    assert!(store.wants_compaction(1));
    store.compact(&[record("a", "final")]).await.unwrap();
    assert!(!store.wants_compaction(1));
    store.save_authorizers(&[record("b", "rb")]).await.unwrap();
    let mut all = store.load_authorizers().await.unwrap();
    all.sort_by(|x, y| x.appid.cmp(&y.appid));
    assert_eq!(all, vec![record("a", "final"), record("b", "rb")]);
}

#[tokio::test]
async fn the_days_fetch_count_survives_reopening_and_compaction() {
    let (today, tomorrow) = (20251124, 20251125);
    let dir = tempfile::tempdir().unwrap();
    let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
    store.save_authorizers(&[record("a", "r1")]).await.unwrap();
    for expected in 1..=3 {
        assert_eq!(store.count_authorizer_fetch(today).await.unwrap(), expected);
    }
    let reopened = FilePlatformStore::new(dir.path(), "saas", "wxc");
    assert_eq!(reopened.load_authorizers().await.unwrap().len(), 1);
    assert_eq!(reopened.authorizer_fetches(today).await.unwrap(), 3);
    assert_eq!(reopened.authorizer_fetches(tomorrow).await.unwrap(), 0);
    assert_eq!(reopened.count_authorizer_fetch(today).await.unwrap(), 4);
    reopened.compact(&[record("a", "r2")]).await.unwrap();
    let compacted = FilePlatformStore::new(dir.path(), "saas", "wxc");
    assert_eq!(
        compacted.load_authorizers().await.unwrap(),
        vec![record("a", "r2")]
    );
    assert_eq!(compacted.authorizer_fetches(today).await.unwrap(), 4);
    assert_eq!(compacted.count_authorizer_fetch(tomorrow).await.unwrap(), 1);
}

#[tokio::test]
async fn the_ticket_is_kept_for_its_own_platform_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
    assert!(store.load_ticket().await.unwrap().is_none());
    let ticket = StoredTicket {
        component_appid: "wxc".into(),
        ticket: "ticket@@@1".into(),
        received_at: 7,
    };
    store.save_ticket(&ticket).await.unwrap();
    assert_eq!(store.load_ticket().await.unwrap(), Some(ticket));
    let other = FilePlatformStore::new(dir.path(), "saas", "wxother");
    assert_eq!(other.load_ticket().await.unwrap(), None);
}

fn untrusted(result: Result<impl std::fmt::Debug, StoreError>) -> crate::store::Doubt {
    match result {
        Err(StoreError::Untrusted { doubt, .. }) => doubt,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Names in `dir` starting with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn a_symlinked_journal_is_set_aside_and_never_written_through() {
    let root = tempfile::tempdir().unwrap();
    let elsewhere = root.path().join("elsewhere.jsonl");
    let planted = FilePlatformStore::new(root.path(), "planted", "wxc");
    planted
        .save_authorizers(&[record("a", "r1")])
        .await
        .unwrap();
    std::fs::rename(planted.journal_path(), &elsewhere).unwrap();
    let before = std::fs::read(&elsewhere).unwrap();
    let dir = root.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    let store = FilePlatformStore::new(&dir, "saas", "wxc");
    std::os::unix::fs::symlink(&elsewhere, store.journal_path()).unwrap();
    assert_eq!(
        untrusted(store.load_authorizers().await),
        crate::store::Doubt::NotRegular
    );
    assert_eq!(named(&dir, "saas.authorizers.jsonl.untrusted-").len(), 1);
    store.save_authorizers(&[record("b", "rb")]).await.unwrap();
    assert_eq!(
        std::fs::read(&elsewhere).unwrap(),
        before,
        "never written through"
    );
    let meta = std::fs::symlink_metadata(store.journal_path()).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(
        store.load_authorizers().await.unwrap(),
        vec![record("b", "rb")]
    );
}

#[tokio::test]
async fn a_journal_others_may_read_is_narrowed_to_0600_and_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
    store.save_authorizers(&[record("a", "r1")]).await.unwrap();
    let path = store.journal_path();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let reopened = FilePlatformStore::new(dir.path(), "saas", "wxc");
    assert_eq!(
        reopened.load_authorizers().await.unwrap(),
        vec![record("a", "r1")]
    );
    assert_eq!(std::fs::metadata(path).unwrap().mode() & 0o7777, 0o600);
}

#[tokio::test]
async fn fifos_for_journal_and_ticket_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = FilePlatformStore::new(dir.path(), "saas", "wxc");
    for path in [
        store.journal_path().to_owned(),
        store.inner.ticket_path.clone(),
    ] {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }
    let at_once = std::time::Duration::from_secs(10);
    let journal = tokio::time::timeout(at_once, store.load_authorizers()).await;
    assert_eq!(
        untrusted(journal.expect("returns at once")),
        crate::store::Doubt::NotRegular
    );
    let ticket = tokio::time::timeout(at_once, store.load_ticket()).await;
    assert_eq!(
        untrusted(ticket.expect("returns at once")),
        crate::store::Doubt::NotRegular
    );
    assert!(named(dir.path(), "saas.")
        .iter()
        .all(|name| name.contains(".untrusted-")));
    // Set aside: the next start finds nothing, and writes anew.
    assert!(store.load_authorizers().await.unwrap().is_empty());
    assert!(store.load_ticket().await.unwrap().is_none());
}

//! The launcher against a real SQLite store and a real project directory, with a queue that
//! records what it is told.

use super::*;
use serde_json::json;
use std::sync::Mutex;
use troupe_core::inventory::{InventoryFormat, NewInventory};
use troupe_core::overrides::Overrides;
use troupe_core::project::{NewProject, ProjectSource};
use troupe_core::template::NewTemplate;
use troupe_sqlite::SqliteStore;

/// A queue that remembers the runs it was told about.
#[derive(Default)]
struct Recorder(Mutex<Vec<i64>>);

#[async_trait]
impl Queue for Recorder {
    fn run_created(&self, run: &Run) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(run.id);
        }
    }

    async fn cancel_run(&self, run_id: i64, mode: CancelMode) -> StoreResult<Run> {
        Err(StoreError::Conflict(format!(
            "the recorder cannot cancel run {run_id} ({mode:?})"
        )))
    }
}

struct Fixture {
    launcher: Launcher,
    queue: Arc<Recorder>,
    template_id: i64,
    _dir: tempfile::TempDir,
}

const HOSTS: &str = "h1 ansible_connection=local\n";

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let project_dir = dir.path().join("project");
    std::fs::create_dir_all(&project_dir).expect("project dir");
    std::fs::write(project_dir.join("site.yml"), "- hosts: all\n  tasks: []\n").expect("playbook");
    std::fs::write(dir.path().join("outside.yml"), "- hosts: all\n").expect("outside");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("troupe.db"))
            .await
            .expect("store"),
    );
    let project = store
        .create_project(&NewProject {
            name: "p".into(),
            source: ProjectSource::Dir {
                path: project_dir.display().to_string(),
            },
        })
        .await
        .expect("project");
    let inventory = store
        .create_inventory(
            &NewInventory {
                name: "inv".into(),
                env: None,
                version: None,
                format: InventoryFormat::Ini,
                hosts: HOSTS.into(),
                vars: None,
            },
            1,
        )
        .await
        .expect("inventory");
    let template = store
        .create_template(&NewTemplate {
            name: "deploy".into(),
            project_id: project.id,
            playbook: "site.yml".into(),
            inventory_id: inventory.id,
            defaults: RunOptions {
                extra_vars: map(json!({"a": 1, "b": 2})),
                limit: Some("web".into()),
                check: true,
                ..RunOptions::default()
            },
            allow_overrides: vec!["extra_vars".into(), "limit".into()],
            labels: [("team".to_owned(), "ops".to_owned())].into(),
            notify: Vec::new(),
        })
        .await
        .expect("template");
    let queue = Arc::new(Recorder::default());
    Fixture {
        launcher: Launcher::new(store, dir.path().join("projects"), queue.clone()),
        queue,
        template_id: template.id,
        _dir: dir,
    }
}

fn map(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

fn by_name(name: &str) -> Ref {
    Ref::Name(name.into())
}

fn inline() -> InventorySource {
    InventorySource::Inline(InventoryContent {
        format: InventoryFormat::Ini,
        hosts: HOSTS.into(),
        vars: None,
    })
}

fn playbook(name: &str, inventory: Option<InventorySource>) -> LaunchRequest {
    LaunchRequest {
        inventory,
        ..LaunchRequest::playbook(
            ProjectRef::Ref(by_name("p")),
            name,
            inline(),
            RunOptions::default(),
        )
    }
}

#[tokio::test]
async fn a_playbook_launch_is_stored_and_announced_once() {
    let f = fixture().await;
    let run = f
        .launcher
        .launch(playbook("site.yml", Some(inline())), Origin::Api)
        .await
        .expect("launch");
    assert_eq!(run.playbook, "site.yml");
    assert_eq!(run.status, troupe_core::RunStatus::Queued);
    assert_eq!(run.template_id, None);
    let seen = f.queue.0.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen, vec![run.id], "announced exactly once");
}

#[tokio::test]
async fn a_template_launch_combines_defaults_overrides_and_labels() {
    let f = fixture().await;
    let overrides = Overrides::from_map(map(json!({"extra_vars": {"b": 3}, "check": false})))
        .expect("overrides");
    let mut request = LaunchRequest::template(Ref::Id(f.template_id), overrides);
    request.labels.insert("who".to_owned(), "test".to_owned());
    let cases = [
        (
            Origin::Api,
            Origin::Template {
                template_id: f.template_id,
            },
        ),
        (
            Origin::Rule {
                rule: "r".into(),
                source: "s".into(),
                template_id: None,
            },
            Origin::Rule {
                rule: "r".into(),
                source: "s".into(),
                template_id: Some(f.template_id),
            },
        ),
    ];
    for (origin, want) in cases {
        let new = f
            .launcher
            .prepare(request.clone(), origin)
            .await
            .expect("prepare");
        assert_eq!(new.origin, want);
        assert_eq!(new.options.extra_vars, map(json!({"a": 1, "b": 3})));
        assert_eq!(new.options.limit.as_deref(), Some("web"), "default kept");
        assert!(!new.options.check, "overridden");
        assert_eq!(new.inventory.hosts, HOSTS, "the template's inventory");
        assert_eq!(new.labels.get("team").map(String::as_str), Some("ops"));
        assert_eq!(new.labels.get("who").map(String::as_str), Some("test"));
    }
    assert!(
        f.queue.0.lock().map(|s| s.is_empty()).unwrap_or(false),
        "prepare announces nothing"
    );
}

#[tokio::test]
async fn refused_launches_say_why_and_store_nothing() {
    let f = fixture().await;
    let unknown_project = LaunchRequest {
        target: Target::Playbook {
            project: ProjectRef::Ref(by_name("nope")),
            playbook: "site.yml".into(),
        },
        ..playbook("site.yml", Some(inline()))
    };
    let cases: Vec<(LaunchRequest, &str)> = vec![
        (unknown_project, "no project named \"nope\""),
        (
            playbook("site.yml", Some(InventorySource::Stored(by_name("gone")))),
            "no inventory named \"gone\"",
        ),
        (playbook("site.yml", None), "give an inventory"),
        (playbook("missing.yml", Some(inline())), "(project \"p\")"),
        (playbook("../outside.yml", Some(inline())), "playbook"),
        (
            LaunchRequest::template(by_name("nope"), Overrides::none()),
            "no template named \"nope\"",
        ),
        (
            LaunchRequest::template(
                Ref::Id(f.template_id),
                Overrides::from_map(map(json!({"forks": 0}))).expect("overrides"),
            ),
            "forks",
        ),
    ];
    for (request, want) in cases {
        let err = f
            .launcher
            .launch(request.clone(), Origin::Api)
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(want), "{request:?}: {err}");
    }
    let listed = f
        .launcher
        .store()
        .list_runs(
            &Default::default(),
            troupe_store::Page {
                before: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert!(listed.is_empty(), "nothing stored: {listed:?}");
    assert!(f.queue.0.lock().map(|s| s.is_empty()).unwrap_or(false));
}

#[tokio::test]
async fn notify_targets_are_checked_sealed_and_follow_the_template() {
    let f = fixture().await;
    let target = |url: &str| Notify {
        webhook: Some(url.into()),
        ..Notify::default()
    };
    let mut request = LaunchRequest::template(Ref::Id(f.template_id), Overrides::default());
    request.notify = vec![target("http://rule.example/hook?token=s3cr3t")];
    // Without a key, a launch asking for notifications is refused: never stored in clear.
    let refused = f.launcher.prepare(request.clone(), Origin::Api).await;
    assert!(matches!(refused, Err(LaunchError::Seal(_))), "{refused:?}");

    let key = Arc::new(SecretKey::generate().expect("key"));
    let launcher = f.launcher.clone().with_key(Arc::clone(&key));
    let sealed = launcher
        .seal_notify(&[target("http://template.example/x")], "notify")
        .expect("sealed");
    let store = launcher.store().clone();
    let t = store.get_template(f.template_id).await.expect("template");
    let with_notify = store
        .create_template(&NewTemplate {
            name: "notifying".into(),
            project_id: t.project_id,
            playbook: t.playbook.clone(),
            inventory_id: t.inventory_id,
            defaults: RunOptions::default(),
            allow_overrides: Vec::new(),
            labels: Labels::new(),
            notify: sealed.clone(),
        })
        .await
        .expect("template");
    request.target = Target::Template(Ref::Id(with_notify.id));
    let new = launcher
        .prepare(request.clone(), Origin::Api)
        .await
        .expect("prepare");
    assert_eq!(new.notify.len(), 2, "the template's, then the request's");
    assert_eq!(new.notify[0], sealed[0]);
    assert_eq!(
        new.notify[1].open(&key).expect("opens"),
        target("http://rule.example/hook?token=s3cr3t")
    );
    assert!(!new.notify[1].sealed.contains("s3cr3t"));
    assert_eq!(new.notify[1].shown.url, "http://rule.example");

    // A bad target names its place.
    request.notify = vec![target("ftp://x/y")];
    match launcher.prepare(request, Origin::Api).await {
        Err(LaunchError::Invalid(v)) => assert_eq!(v.field, "notify[0].webhook"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn secret_extra_vars_are_stored_sealed() {
    let f = fixture().await;
    let key = Arc::new(SecretKey::generate().expect("key"));
    let launcher = f
        .launcher
        .clone()
        .with_key(Arc::clone(&key))
        .with_secret_names(troupe_core::redact::SecretNames::new("(?i)pass").expect("regex"));
    let mut request = playbook("site.yml", Some(inline()));
    let options = RunOptions {
        extra_vars: map(serde_json::json!({
            "user": "u", "db": {"PASSWORD": "hunter22", "port": 5432}, "api_token": "kept"
        })),
        ..RunOptions::default()
    };
    request.options = crate::LaunchOptions::Exact(Box::new(options));
    let run = launcher.launch(request, Origin::Api).await.expect("launch");
    let stored = f.launcher.store().get_run(run.id).await.expect("run");
    let text = serde_json::to_string(&stored.options.extra_vars).expect("json");
    assert!(!text.contains("hunter22"), "{text}");
    assert!(
        text.contains("\"api_token\":\"kept\""),
        "only names matching the pattern: {text}"
    );
    let mut vars = stored.options.extra_vars.clone();
    let secrets = troupe_core::redact::open_sealed(&mut vars, key.as_ref()).expect("opens");
    assert_eq!(secrets, vec!["hunter22".to_owned()]);
    assert_eq!(vars["db"]["PASSWORD"], "hunter22");
    assert_eq!(vars["db"]["port"], 5432);
}

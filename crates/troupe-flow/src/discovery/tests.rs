//! Every discovery kind against real parts: a SQLite store, the real `ansible` from the venv,
//! real files and processes, and HTTP servers the tests start that answer like PuppetDB,
//! Consul, etcd's JSON gateway and a generic JSON API.

use super::*;
use crate::doc::{
    CommandNodes, ConsulNodes, Dur, EtcdNodes, FileNodes, HttpNodes, InventoryNodes, PuppetDbNodes,
};
use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use indexmap::IndexMap;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use troupe_core::inventory::NewInventory;
use troupe_core::project::{NewProject, ProjectSource};
use troupe_sqlite::SqliteStore;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A SQLite store in a temporary directory, with a project directory beside it.
struct Fixture {
    discovery: Discovery,
    store: Arc<dyn Store>,
    project_dir: PathBuf,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let project_dir = dir.path().join("project");
    std::fs::create_dir_all(&project_dir).expect("project dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("troupe.db"))
            .await
            .expect("store"),
    );
    store
        .create_project(&NewProject {
            name: "site".into(),
            source: ProjectSource::Dir {
                path: project_dir.display().to_string(),
            },
        })
        .await
        .expect("project");
    // Where the test's PATH has ansible-playbook (the CI venv), like troupe's Ansible::bin_dir.
    let bin_dir = troupe_ansible::on_path(Path::new("ansible-playbook"))
        .and_then(|p| p.parent().map(Path::to_path_buf));
    Fixture {
        discovery: Discovery::new(store.clone(), dir.path().join("projects"), bin_dir),
        store,
        project_dir,
        dir,
    }
}

fn set(source: NodeSource) -> NodeSet {
    NodeSet {
        source,
        at_least: None,
        limit: None,
        when_empty: WhenEmpty::Fail,
        vars: Map::new(),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn nodes_of(f: &Fixture, source: NodeSource) -> Result<Vec<String>, DiscoveryError> {
    match f.discovery.discover("n", &set(source)).await? {
        Found::Nodes(n) => Ok(n),
        Found::Skip => panic!("skip without when_empty: skip"),
    }
}

/// The source's problem, or a panic saying what came instead.
fn problem(result: Result<Vec<String>, DiscoveryError>) -> SourceError {
    match result {
        Err(DiscoveryError::Source { problem, .. }) => problem,
        other => panic!("expected a source error, got {other:?}"),
    }
}

/// Serves `router` on 127.0.0.1 on a free port; returns `http://127.0.0.1:PORT`.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------------
// Policy

#[tokio::test]
async fn static_keeps_the_order_given_and_drops_duplicates_and_blanks() {
    let f = fixture().await;
    let got = nodes_of(
        &f,
        NodeSource::Static(names(&["b", "a", "b", " c ", "", "a"])),
    )
    .await
    .expect("found");
    assert_eq!(got, names(&["b", "a", "c"]));
}

#[tokio::test]
async fn limit_keeps_the_first_nodes() {
    let f = fixture().await;
    let mut s = set(NodeSource::Static(names(&["w1", "w2", "w2", "w3", "w4"])));
    s.limit = Some(2);
    assert_eq!(
        f.discovery.discover("web", &s).await.expect("found"),
        Found::Nodes(names(&["w1", "w2"]))
    );
}

#[tokio::test]
async fn at_least_fails_with_how_many_were_found_and_needed() {
    let f = fixture().await;
    let mut s = set(NodeSource::Static(names(&["w1", "w2", "w1"])));
    s.at_least = Some(3);
    let err = f.discovery.discover("web", &s).await.expect_err("too few");
    assert!(
        matches!(
            err,
            DiscoveryError::TooFew {
                found: 2,
                needed: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("\"web\"") && text.contains("static"),
        "{text}"
    );
    assert!(
        text.contains("found 2") && text.contains("at least 3"),
        "{text}"
    );

    // `at_least` counts what `limit` kept.
    s.at_least = Some(2);
    s.limit = Some(1);
    assert!(matches!(
        f.discovery.discover("web", &s).await,
        Err(DiscoveryError::TooFew {
            found: 1,
            needed: 2,
            ..
        })
    ));
    s.limit = None;
    assert_eq!(
        f.discovery.discover("web", &s).await.expect("enough"),
        Found::Nodes(names(&["w1", "w2"]))
    );
}

#[tokio::test]
async fn when_empty_fails_skips_or_continues() {
    let f = fixture().await;
    let mut s = set(NodeSource::Static(names(&["", "  "])));
    let err = f.discovery.discover("db", &s).await.expect_err("fails");
    assert!(matches!(&err, DiscoveryError::Empty { set, kind: "static" } if set == "db"));
    assert!(err.to_string().contains("no node found"), "{err}");

    s.when_empty = WhenEmpty::Skip;
    assert_eq!(
        f.discovery.discover("db", &s).await.expect("skip"),
        Found::Skip
    );

    // `at_least` is about sets that found something: an empty one is when_empty's.
    s.when_empty = WhenEmpty::Continue;
    s.at_least = Some(1);
    assert_eq!(
        f.discovery.discover("db", &s).await.expect("continue"),
        Found::Nodes(Vec::new())
    );
}

#[tokio::test]
async fn names_with_blanks_inside_are_refused() {
    let f = fixture().await;
    let p = problem(nodes_of(&f, NodeSource::Static(names(&["web1 web2"]))).await);
    assert!(
        matches!(&p, SourceError::BadName { name, .. } if name == "web1 web2"),
        "{p:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// inventory

const GROUPED: &str = "\
all:
  hosts:
    solo:
  children:
    web:
      hosts:
        web1:
        web2:
        web3:
    db:
      hosts:
        db1:
        db2:
    prod:
      hosts:
        web1:
        db1:
        web3:
";

async fn store_inventory(f: &Fixture, name: &str, format: InventoryFormat, hosts: &str) {
    let new = NewInventory {
        name: name.into(),
        env: None,
        version: None,
        format,
        hosts: hosts.into(),
        vars: Some("web: {http_port: 80}\n".into()),
    };
    let summary = new.validate().expect("valid inventory");
    f.store
        .create_inventory(&new, summary.hosts.len() as i64)
        .await
        .expect("inventory");
}

fn inventory(name: &str, pattern: Option<&str>) -> NodeSource {
    NodeSource::Inventory(InventoryNodes {
        name: name.into(),
        pattern: pattern.map(str::to_owned),
    })
}

#[tokio::test]
async fn inventory_patterns_are_evaluated_by_ansible() {
    let f = fixture().await;
    store_inventory(&f, "fleet", InventoryFormat::Yaml, GROUPED).await;
    let cases: [(Option<&str>, &[&str]); 5] = [
        (None, &["solo", "web1", "web2", "web3", "db1", "db2"]),
        (Some("web"), &["web1", "web2", "web3"]),
        (Some("web:&prod"), &["web1", "web3"]),
        (Some("all:!db1"), &["solo", "web1", "web2", "web3", "db2"]),
        (Some("db:web[0]"), &["db1", "db2", "web1"]),
    ];
    for (pattern, want) in cases {
        let got = nodes_of(&f, inventory("fleet", pattern))
            .await
            .unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
        assert_eq!(got, names(want), "pattern {pattern:?}");
    }
}

#[tokio::test]
async fn an_ini_inventory_works_too_and_a_pattern_matching_nothing_is_empty() {
    let f = fixture().await;
    store_inventory(
        &f,
        "ini",
        InventoryFormat::Ini,
        "[web]\nw[1:3]\n\n[db]\nd1\n",
    )
    .await;
    assert_eq!(
        nodes_of(&f, inventory("ini", Some("web")))
            .await
            .expect("found"),
        names(&["w1", "w2", "w3"])
    );
    let mut s = set(inventory("ini", Some("nosuchgroup")));
    s.when_empty = WhenEmpty::Continue;
    assert_eq!(
        f.discovery.discover("n", &s).await.expect("empty"),
        Found::Nodes(Vec::new())
    );
}

#[tokio::test]
async fn a_bad_pattern_is_an_error_with_ansibles_words() {
    let f = fixture().await;
    store_inventory(&f, "fleet", InventoryFormat::Yaml, GROUPED).await;
    let p = problem(nodes_of(&f, inventory("fleet", Some("web:&"))).await);
    let SourceError::Ansible { pattern, message } = &p else {
        panic!("expected an ansible error, got {p:?}");
    };
    assert_eq!(pattern, "web:&");
    assert!(message.contains("[ERROR]"), "{message}");
    assert!(!message.contains("Traceback"), "{message}");
}

#[tokio::test]
async fn a_missing_inventory_is_named() {
    let f = fixture().await;
    let p = problem(nodes_of(&f, inventory("nope", None)).await);
    assert!(
        matches!(&p, SourceError::InventoryNotFound(n) if n == "nope"),
        "{p:?}"
    );
}

#[tokio::test]
async fn inventory_of_gives_every_node_the_vars_and_ansible_reads_names_as_written() {
    let f = fixture().await;
    let nodes = names(&["web1", "yes", "1.10", "null", "fe80::1", "a\"b"]);
    let vars = match json!({"ansible_connection": "local", "tier": {"n": 2}}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let content = inventory_of(&nodes, &vars);
    assert_eq!(content.format, InventoryFormat::Yaml);
    let summary = content.validate().expect("troupe reads it");
    assert_eq!(summary.hosts.len(), nodes.len());
    let doc: Value = serde_saphyr::from_str(&content.hosts).expect("YAML");
    for n in &nodes {
        assert_eq!(doc["all"]["hosts"][n], Value::Object(vars.clone()), "{n}");
    }
    // ansible (PyYAML, YAML 1.1) reads the same names in the same order: `yes` stays `yes`,
    // not `True`.
    let ansible =
        inventory::locate_ansible(f.discovery.ansible_bin_dir.as_deref()).expect("ansible on PATH");
    let listed = inventory::list_hosts(&ansible, &content, "all")
        .await
        .expect("ansible lists it");
    assert_eq!(listed, nodes);
    assert!(
        inventory_of(&[], &Map::new()).validate().is_ok(),
        "an empty set is a valid inventory"
    );
}

#[test]
fn list_hosts_output_is_parsed_and_checked() {
    let out = "  hosts (2):\n    web1\n    web3\n";
    assert_eq!(
        inventory::parse_list_hosts(out),
        Some(names(&["web1", "web3"]))
    );
    assert_eq!(inventory::parse_list_hosts("  hosts (0):\n"), Some(vec![]));
    assert_eq!(inventory::parse_list_hosts("  hosts (3):\n    a\n"), None);
    assert_eq!(inventory::parse_list_hosts("nothing useful"), None);
}

// ---------------------------------------------------------------------------------------------
// file

fn file(project: &str, path: &str) -> NodeSource {
    NodeSource::File(FileNodes {
        project: project.into(),
        path: path.into(),
    })
}

#[tokio::test]
async fn files_hold_a_list_or_a_mapping_with_nodes() {
    let f = fixture().await;
    std::fs::create_dir_all(f.project_dir.join("nodes")).expect("dir");
    std::fs::write(
        f.project_dir.join("nodes/web.yml"),
        "# the web tier\n- web1\n- web2\n- web1\n",
    )
    .expect("write");
    std::fs::write(
        f.project_dir.join("db.json"),
        r#"{"nodes": ["db1", "db2"], "comment": "ignored"}"#,
    )
    .expect("write");
    std::fs::write(f.project_dir.join("mapping.yaml"), "nodes:\n  - m1\n").expect("write");
    std::fs::write(f.project_dir.join("bad.yml"), "nodes: web1\n").expect("write");
    assert_eq!(
        nodes_of(&f, file("site", "nodes/web.yml"))
            .await
            .expect("yaml"),
        names(&["web1", "web2"])
    );
    assert_eq!(
        nodes_of(&f, file("site", "./db.json")).await.expect("json"),
        names(&["db1", "db2"])
    );
    assert_eq!(
        nodes_of(&f, file("site", "mapping.yaml"))
            .await
            .expect("mapping"),
        names(&["m1"])
    );
    let p = problem(nodes_of(&f, file("site", "bad.yml")).await);
    assert!(p.to_string().contains("`nodes` is not a list"), "{p}");
    let p = problem(nodes_of(&f, file("site", "missing.yml")).await);
    assert!(p.to_string().contains("does not exist"), "{p}");
    let p = problem(nodes_of(&f, file("nosuch", "db.json")).await);
    assert!(
        matches!(&p, SourceError::ProjectNotFound(n) if n == "nosuch"),
        "{p:?}"
    );
}

#[tokio::test]
async fn files_outside_the_project_are_refused() {
    let f = fixture().await;
    let outside = f.dir.path().join("outside.yml");
    std::fs::write(&outside, "- secret-host\n").expect("write");
    std::os::unix::fs::symlink(&outside, f.project_dir.join("link.yml")).expect("symlink");
    std::os::unix::fs::symlink(f.dir.path(), f.project_dir.join("up")).expect("symlink");
    for path in [
        "../outside.yml",
        "nodes/../../outside.yml",
        "link.yml",
        "up/outside.yml",
        outside.to_str().expect("utf-8 path"),
    ] {
        let p = problem(nodes_of(&f, file("site", path)).await);
        assert!(
            matches!(&p, SourceError::Path { path: shown, .. } if shown == path),
            "{path}: {p:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// command

fn command(cmd: &str, env: &[(&str, &str)], timeout: Option<Duration>) -> NodeSource {
    NodeSource::Command(CommandNodes {
        command: cmd.into(),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        timeout: timeout.map(Dur),
    })
}

#[tokio::test]
async fn a_command_prints_names_one_per_line() {
    let f = fixture().await;
    let got = nodes_of(
        &f,
        command(
            "echo '# the fleet'; echo web1; echo; echo \"  $EXTRA  \"; echo web1",
            &[("EXTRA", "web2")],
            None,
        ),
    )
    .await
    .expect("found");
    assert_eq!(got, names(&["web1", "web2"]));
}

#[tokio::test]
async fn a_command_may_print_a_json_array() {
    let f = fixture().await;
    let got = nodes_of(&f, command(r#"printf '  ["a", "b"]\n'"#, &[], None))
        .await
        .expect("found");
    assert_eq!(got, names(&["a", "b"]));
    let p = problem(nodes_of(&f, command(r#"echo '["a", 3]'"#, &[], None)).await);
    assert!(p.to_string().contains("item 1 is a number"), "{p}");
}

#[tokio::test]
async fn a_failing_command_reports_its_exit_code_and_last_stderr_lines() {
    let f = fixture().await;
    let p = problem(
        nodes_of(
            &f,
            command(
                "echo web1; for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 3",
                &[],
                None,
            ),
        )
        .await,
    );
    let SourceError::CommandFailed { status, stderr } = &p else {
        panic!("expected a failed command, got {p:?}");
    };
    assert_eq!(status, "exit code 3");
    assert!(
        stderr.ends_with("line7") && !stderr.contains("line1"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_with_what_it_started() {
    let f = fixture().await;
    let pid_file = f.dir.path().join("sleeper.pid");
    let started = Instant::now();
    let p = problem(
        nodes_of(
            &f,
            command(
                &format!("sleep 30 & echo $! > {}; wait", pid_file.display()),
                &[],
                Some(Duration::from_millis(800)),
            ),
        )
        .await,
    );
    assert!(matches!(p, SourceError::CommandTimeout { .. }), "{p:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid = std::fs::read_to_string(&pid_file).expect("pid written");
    // Gone, or a zombie waiting for a reaper: either way no longer running. SIGKILL takes
    // effect when the process is next scheduled, so give it a moment.
    let stat_path = format!("/proc/{}/stat", pid.trim());
    let dead = |stat: &str| {
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        stat.is_empty() || state.starts_with('Z')
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stat = std::fs::read_to_string(&stat_path).unwrap_or_default();
    while !dead(&stat) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        stat = std::fs::read_to_string(&stat_path).unwrap_or_default();
    }
    assert!(dead(&stat), "the sleep is still alive: {stat}");
}

#[test]
fn the_default_command_timeout_is_thirty_seconds() {
    assert_eq!(command::DEFAULT_TIMEOUT, Duration::from_secs(30));
}

// ---------------------------------------------------------------------------------------------
// http

/// A JSON API that wants a bearer token and nests its list.
fn json_api() -> Router {
    Router::new()
        .route(
            "/api/hosts",
            get(|headers: HeaderMap| async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer t0k")
                {
                    return (StatusCode::UNAUTHORIZED, "who are you?").into_response();
                }
                Json(json!({"data": {"items": [
                    {"name": "h1", "up": true},
                    {"name": "h2", "up": false},
                    {"name": "h1"}
                ]}}))
                .into_response()
            }),
        )
        .route("/plain", get(|| async { Json(json!(["p1", "p2"])) }))
        .route("/html", get(|| async { "<html>nope</html>" }))
}

fn http(
    url: &str,
    headers: &[(&str, &str)],
    pointer: Option<&str>,
    field: Option<&str>,
) -> NodeSource {
    NodeSource::Http(HttpNodes {
        url: url.into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<IndexMap<_, _>>(),
        pointer: pointer.map(str::to_owned),
        field: field.map(str::to_owned),
    })
}

#[tokio::test]
async fn http_follows_the_pointer_and_reads_the_field() {
    let f = fixture().await;
    let base = serve(json_api()).await;
    let got = nodes_of(
        &f,
        http(
            &format!("{base}/api/hosts"),
            &[("Authorization", "Bearer t0k")],
            Some("/data/items"),
            Some("name"),
        ),
    )
    .await
    .expect("found");
    assert_eq!(got, names(&["h1", "h2"]));
    let got = nodes_of(&f, http(&format!("{base}/plain"), &[], None, None))
        .await
        .expect("found");
    assert_eq!(got, names(&["p1", "p2"]));
    let p = problem(
        nodes_of(
            &f,
            http(
                &format!("{base}/api/hosts"),
                &[("Authorization", "Bearer t0k")],
                Some("/data/items"),
                None,
            ),
        )
        .await,
    );
    assert!(p.to_string().contains("`field`"), "{p}");
    let p = problem(
        nodes_of(
            &f,
            http(
                &format!("{base}/api/hosts"),
                &[("Authorization", "Bearer t0k")],
                Some("/data/nothing"),
                Some("name"),
            ),
        )
        .await,
    );
    assert!(p.to_string().contains("/data/nothing"), "{p}");
}

#[tokio::test]
async fn http_errors_name_the_url_and_status_without_secrets() {
    let f = fixture().await;
    let base = serve(json_api()).await;
    let with_secrets = base.replace("http://", "http://bob:hunter2@") + "/api/hosts?token=abc123";
    let err = f
        .discovery
        .discover(
            "api",
            &set(http(&with_secrets, &[("X-Key", "sekrit")], None, None)),
        )
        .await
        .expect_err("401");
    let text = err.to_string();
    assert!(text.contains(&format!("{base}/api/hosts")), "{text}");
    assert!(
        text.contains("401") && text.contains("\"api\" (http)"),
        "{text}"
    );
    for secret in ["bob", "hunter2", "abc123", "sekrit"] {
        assert!(!text.contains(secret), "{secret} in {text}");
        assert!(!format!("{err:?}").contains(secret), "{secret} in {err:?}");
    }

    let p = problem(nodes_of(&f, http(&format!("{base}/html"), &[], None, None)).await);
    assert!(p.to_string().contains("not JSON"), "{p}");

    // Nobody listens there (a port just freed).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let p = problem(nodes_of(&f, http(&format!("http://{closed}/x"), &[], None, None)).await);
    assert!(
        matches!(&p, SourceError::Request { url, .. } if url == &format!("http://{closed}/x")),
        "{p:?}"
    );
    let p = problem(nodes_of(&f, http("not a url", &[], None, None)).await);
    assert!(matches!(p, SourceError::BadUrl { .. }), "{p:?}");
}

// ---------------------------------------------------------------------------------------------
// PuppetDB

const PQL: &str = r#"nodes[certname] { facts.os.family = "Debian" and certname ~ "web" }"#;

/// Answers PQL queries like PuppetDB's `/pdb/query/v4`: this one query is known.
fn puppetdb() -> Router {
    Router::new().route(
        "/pdb/query/v4",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            match q.get("query").map(String::as_str) {
                Some(PQL) => Json(json!([
                    {"certname": "web2.example.com"},
                    {"certname": "web1.example.com"}
                ]))
                .into_response(),
                Some(other) => (
                    StatusCode::BAD_REQUEST,
                    format!("PQL parse error at line 1, column 1: {other}"),
                )
                    .into_response(),
                None => (StatusCode::BAD_REQUEST, "missing query").into_response(),
            }
        }),
    )
}

#[tokio::test]
async fn puppetdb_answers_certnames() {
    let f = fixture().await;
    let base = serve(puppetdb()).await;
    let source = |url: String, query: &str| {
        NodeSource::Puppetdb(PuppetDbNodes {
            url,
            query: query.into(),
        })
    };
    let got = nodes_of(&f, source(format!("{base}/"), PQL))
        .await
        .expect("found");
    assert_eq!(got, names(&["web2.example.com", "web1.example.com"]));
    let p = problem(nodes_of(&f, source(base, "nodes[")).await);
    let SourceError::Status { status, body, .. } = &p else {
        panic!("expected a status error, got {p:?}");
    };
    assert_eq!(*status, 400);
    assert!(body.contains("PQL parse error"), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Consul

/// Answers like Consul's catalog: `/v1/catalog/service/{service}` filtered by `tag`, and
/// `/v1/catalog/nodes`; datacenter `dc1` is the only one; the ACL token is required.
fn consul() -> Router {
    let entries = json!([
        {"Node": "web-a", "Address": "10.0.0.1", "ServiceTags": ["blue", "v2"]},
        {"Node": "web-b", "Address": "10.0.0.2", "ServiceTags": ["green"]},
        {"Node": "web-c", "Address": "10.0.0.3", "ServiceTags": ["blue"]}
    ]);
    let authorized =
        |h: &HeaderMap| h.get("x-consul-token").and_then(|v| v.to_str().ok()) == Some("acl");
    Router::new()
        .route(
            "/v1/catalog/service/{service}",
            get(
                move |UrlPath(service): UrlPath<String>,
                      Query(q): Query<HashMap<String, String>>,
                      h: HeaderMap| {
                    let entries = entries.clone();
                    async move {
                        if !authorized(&h) {
                            return (StatusCode::FORBIDDEN, "ACL not found").into_response();
                        }
                        if service != "web api" || q.get("dc").is_some_and(|dc| dc != "dc1") {
                            return Json(json!([])).into_response();
                        }
                        let Value::Array(all) = entries else {
                            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                        };
                        let picked: Vec<Value> = all
                            .into_iter()
                            .filter(|e| match q.get("tag") {
                                Some(tag) => e["ServiceTags"]
                                    .as_array()
                                    .is_some_and(|tags| tags.iter().any(|t| t == tag.as_str())),
                                None => true,
                            })
                            .collect();
                        Json(Value::Array(picked)).into_response()
                    }
                },
            ),
        )
        .route(
            "/v1/catalog/nodes",
            get(move |h: HeaderMap| async move {
                if !authorized(&h) {
                    return (StatusCode::FORBIDDEN, "ACL not found").into_response();
                }
                Json(json!([
                    {"Node": "consul-1", "Address": "10.0.1.1"},
                    {"Node": "web-a", "Address": "10.0.0.1"}
                ]))
                .into_response()
            }),
        )
}

fn consul_nodes(url: &str, service: Option<&str>, tag: Option<&str>) -> ConsulNodes {
    ConsulNodes {
        url: url.into(),
        service: service.map(str::to_owned),
        tag: tag.map(str::to_owned),
        datacenter: None,
        use_address: false,
        token: Some("acl".into()),
    }
}

#[tokio::test]
async fn consul_finds_a_services_nodes_by_tag_and_datacenter() {
    let f = fixture().await;
    let base = serve(consul()).await;
    let all = consul_nodes(&base, Some("web api"), None);
    assert_eq!(
        nodes_of(&f, NodeSource::Consul(all.clone()))
            .await
            .expect("found"),
        names(&["web-a", "web-b", "web-c"])
    );
    let blue = consul_nodes(&base, Some("web api"), Some("blue"));
    assert_eq!(
        nodes_of(&f, NodeSource::Consul(blue.clone()))
            .await
            .expect("found"),
        names(&["web-a", "web-c"])
    );
    let addresses = ConsulNodes {
        use_address: true,
        datacenter: Some("dc1".into()),
        ..blue.clone()
    };
    assert_eq!(
        nodes_of(&f, NodeSource::Consul(addresses))
            .await
            .expect("found"),
        names(&["10.0.0.1", "10.0.0.3"])
    );
    let mut elsewhere = set(NodeSource::Consul(ConsulNodes {
        datacenter: Some("dc9".into()),
        ..blue.clone()
    }));
    elsewhere.when_empty = WhenEmpty::Skip;
    assert_eq!(
        f.discovery.discover("web", &elsewhere).await.expect("skip"),
        Found::Skip
    );
    let p = problem(
        nodes_of(
            &f,
            NodeSource::Consul(ConsulNodes {
                token: None,
                ..blue
            }),
        )
        .await,
    );
    assert!(
        matches!(p, SourceError::Status { status: 403, .. }),
        "{p:?}"
    );
}

#[tokio::test]
async fn consul_without_a_service_lists_every_node() {
    let f = fixture().await;
    let base = serve(consul()).await;
    assert_eq!(
        nodes_of(&f, NodeSource::Consul(consul_nodes(&base, None, None)))
            .await
            .expect("found"),
        names(&["consul-1", "web-a"])
    );
}

// ---------------------------------------------------------------------------------------------
// etcd

/// Answers `POST /v3/kv/range` like etcd's JSON gateway over a fixed key space: keys in
/// `[key, range_end)`, base64 both ways, no `kvs` when nothing matches.
fn etcd() -> Router {
    let mut keys: Vec<&'static [u8]> = vec![
        b"/nodes/web1/ip",
        b"/nodes/web1/role",
        b"/nodes/web2",
        b"/nodes/db1/ip",
        b"/nodesX/intruder",
        b"/other/x",
    ];
    // etcd answers in key order.
    keys.sort();
    Router::new().route(
        "/v3/kv/range",
        post(move |Json(body): Json<Value>| {
            let keys = keys.clone();
            async move {
            let decode = |field: &str| {
                body[field]
                    .as_str()
                    .and_then(|s| STANDARD.decode(s).ok())
            };
            let (Some(key), Some(end)) = (decode("key"), decode("range_end")) else {
                return (StatusCode::BAD_REQUEST, "key and range_end, base64").into_response();
            };
            if body["keys_only"] != json!(true) {
                return (StatusCode::BAD_REQUEST, "this test wants keys_only").into_response();
            }
            let kvs: Vec<Value> = keys
                .iter()
                .filter(|k| **k >= key.as_slice() && (end == b"\0" || **k < end.as_slice()))
                .map(|k| json!({"key": STANDARD.encode(k), "create_revision": "5"}))
                .collect();
            if kvs.is_empty() {
                Json(json!({"header": {"revision": "9"}})).into_response()
            } else {
                Json(json!({"header": {"revision": "9"}, "kvs": kvs, "count": kvs.len().to_string()}))
                    .into_response()
            }
            }
        }),
    )
}

#[tokio::test]
async fn etcd_nodes_are_the_first_segment_after_the_prefix() {
    let f = fixture().await;
    let base = serve(etcd()).await;
    let source = |prefix: &str| {
        NodeSource::Etcd(EtcdNodes {
            url: base.clone(),
            prefix: prefix.into(),
        })
    };
    assert_eq!(
        nodes_of(&f, source("/nodes/")).await.expect("found"),
        names(&["db1", "web1", "web2"])
    );
    let mut none = set(source("/absent/"));
    none.when_empty = WhenEmpty::Continue;
    assert_eq!(
        f.discovery.discover("n", &none).await.expect("empty"),
        Found::Nodes(Vec::new())
    );
}

#[test]
fn etcd_range_end_is_the_prefix_plus_one() {
    assert_eq!(etcd::range_end(b"/nodes/"), b"/nodes0".to_vec());
    assert_eq!(etcd::range_end(b"a\xff"), b"b".to_vec());
    assert_eq!(etcd::range_end(b"\xff\xff"), vec![0]);
    assert_eq!(etcd::range_end(b""), vec![0]);
}

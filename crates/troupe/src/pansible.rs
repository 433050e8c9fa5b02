//! Pansible's configuration file (`pansible.yml`), mapped onto troupe's configuration.
//!
//! Pansible read a YAML file whose every field an environment variable `PANSIBLE_<FIELD>` could
//! set. troupe reads the fields it has a use for: `port` (Go's listen syntax, `:5757`) becomes
//! `listen`, and `hosts_per_task` becomes `pansible_hosts_per_task`. Other fields (Pansible's
//! database, its key directory...) have no meaning here and are reported as ignored. The file
//! is a layer between troupe's own file and its `TROUPE_*` variables.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

/// What a `pansible.yml` sets of troupe's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PansibleLayer {
    /// From `port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// From `hosts_per_task`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pansible_hosts_per_task: Option<u32>,
    /// Fields troupe has no use for, by name.
    #[serde(skip)]
    pub ignored: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PansibleFile {
    port: Option<Value>,
    hosts_per_task: Option<Value>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// Reads `path`, then `PANSIBLE_PORT` and `PANSIBLE_HOSTS_PER_TASK` (from `env`) over it.
pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<PansibleLayer> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("could not read {}: {e}", path.display()))?;
    let file: PansibleFile = if text.trim().is_empty() {
        PansibleFile::default()
    } else {
        serde_saphyr::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is not a Pansible configuration: {e}", path.display())
        })?
    };
    let text_of = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let port = env("PANSIBLE_PORT").or_else(|| file.port.map(text_of));
    let hosts = env("PANSIBLE_HOSTS_PER_TASK").or_else(|| file.hosts_per_task.map(text_of));
    let bad = |field: &str, why: String| {
        anyhow::anyhow!("invalid configuration: {}: {field}: {why}", path.display())
    };
    let listen = port
        .map(|p| {
            parse_port(&p)
                .ok_or_else(|| bad("port", format!("{p:?} is not `:PORT` or `HOST:PORT`")))
        })
        .transpose()?;
    let pansible_hosts_per_task = hosts
        .map(|h| match h.trim().parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(bad(
                "hosts_per_task",
                format!("{h:?} is not a number from 1 to 1000"),
            )),
        })
        .transpose()?;
    Ok(PansibleLayer {
        listen,
        pansible_hosts_per_task,
        ignored: file.other.into_keys().collect(),
    })
}

/// Go's listen address: `:5757` (every interface), `HOST:5757`, or a bare port.
fn parse_port(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        return Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port.parse().ok()?,
        ));
    }
    if let Ok(port) = text.parse::<u16>() {
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let (host, port) = text.rsplit_once(':')?;
    let ip = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().ok()?
    };
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(yaml: &str, env: &[(&str, &str)]) -> anyhow::Result<PansibleLayer> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pansible.yml");
        std::fs::write(&path, yaml)?;
        load(&path, |k| {
            env.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn fields_map_onto_troupes_and_pansible_variables_win() -> anyhow::Result<()> {
        let l = layer(
            "port: \":5757\"\nhosts_per_task: 50\nmysql: x\nkeydir: /k\n",
            &[],
        )?;
        assert_eq!(l.listen, Some("0.0.0.0:5757".parse()?));
        assert_eq!(l.pansible_hosts_per_task, Some(50));
        assert_eq!(l.ignored, vec!["keydir".to_owned(), "mysql".to_owned()]);
        let l = layer(
            "port: \":5757\"\n",
            &[
                ("PANSIBLE_PORT", "127.0.0.1:6000"),
                ("PANSIBLE_HOSTS_PER_TASK", "3"),
            ],
        )?;
        assert_eq!(l.listen, Some("127.0.0.1:6000".parse()?));
        assert_eq!(l.pansible_hosts_per_task, Some(3));
        assert_eq!(
            layer("port: 7000\n", &[])?.listen,
            Some("0.0.0.0:7000".parse()?)
        );
        assert_eq!(
            layer("port: localhost:7000\n", &[])?.listen,
            Some("127.0.0.1:7000".parse()?)
        );
        assert_eq!(layer("", &[])?, PansibleLayer::default());
        for bad in [
            "port: nowhere\n",
            "hosts_per_task: 0\n",
            "hosts_per_task: many\n",
            "- a list\n",
        ] {
            assert!(layer(bad, &[]).is_err(), "{bad}");
        }
        Ok(())
    }
}

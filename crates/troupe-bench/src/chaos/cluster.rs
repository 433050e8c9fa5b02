//! A private PostgreSQL cluster the chaos script may stop (the machine's shared one is never
//! touched): `initdb` into a temporary directory, `pg_ctl start` on a free port.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A cluster in a directory of its own.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Run as `postgres` when we are root (initdb refuses root).
    as_postgres: bool,
}

impl Cluster {
    /// `initdb` under `root` with the tools in `bin` (the newest `/usr/lib/postgresql/*/bin`
    /// when `None`).
    pub fn init(bin: Option<PathBuf>, root: &Path) -> anyhow::Result<Cluster> {
        let bin = match bin {
            Some(b) => b,
            None => newest_bin()?,
        };
        let as_postgres = nix::unistd::geteuid().is_root();
        let dir = root.join("pg");
        std::fs::create_dir_all(root)?;
        if as_postgres {
            // The cluster's owner must reach its directory and write its log and socket there.
            let user = nix::unistd::User::from_name("postgres")?
                .context("no user postgres to run the private cluster as")?;
            nix::unistd::chown(root, Some(user.uid), Some(user.gid))?;
        }
        let port = troupe_testkit::free_port()?.port();
        let cluster = Cluster {
            bin,
            dir,
            port,
            as_postgres,
        };
        cluster.tool(
            "initdb",
            &[
                "-D",
                &cluster.dir.to_string_lossy(),
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ],
        )?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it takes connections.
    pub fn start(&self) -> anyhow::Result<()> {
        let socket_dir = self.root();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            socket_dir.display()
        );
        let log = self.root().join("pg.log");
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.dir.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        )
    }

    /// `pg_ctl stop -m fast`: every connection is cut, as a failover or a restart would.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.dir.to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    fn root(&self) -> PathBuf {
        self.dir
            .parent()
            .map_or_else(|| self.dir.clone(), Path::to_owned)
    }

    fn tool(&self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.root())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{name} {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stopped already, or never started: nothing to do either way.
        let _ = self.stop();
    }
}

fn newest_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("looking for PostgreSQL in /usr/lib/postgresql (or pass --pg-bin)")?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no /usr/lib/postgresql/*/bin/initdb (pass --pg-bin)")
}

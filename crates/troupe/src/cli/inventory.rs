//! `troupe inventory --list | --host H`: a troupe inventory as an Ansible inventory script.
//!
//! Ansible runs an executable inventory with `--list` (and `--host H` when the list has no
//! `_meta`), so a two-line wrapper that sets `TROUPE_SERVER`, `TROUPE_TOKEN` and
//! `TROUPE_INVENTORY` and execs `troupe inventory "$@"` lets a plain `ansible-playbook -i`
//! use a troupe inventory.

use crate::cli::encode;
use crate::client::Client;
use serde_json::Value;
use troupe_wire::inventories::InventoryList;

/// What to print.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["list", "host"]))]
pub struct InventoryArgs {
    /// The inventory, by name or id.
    #[arg(long, env = "TROUPE_INVENTORY")]
    inventory: String,
    /// Print the whole inventory (ansible-inventory --list's JSON).
    #[arg(long)]
    list: bool,
    /// Print one host's variables.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
}

/// Prints the inventory's JSON; returns the exit code.
pub async fn run(client: &Client, args: InventoryArgs) -> anyhow::Result<i32> {
    let id = inventory_id(client, &args.inventory).await?;
    let path = match &args.host {
        Some(host) => format!("/api/v1/inventories/{id}/ansible?host={}", encode(host)),
        None => format!("/api/v1/inventories/{id}/ansible"),
    };
    // Ansible's own inventory JSON: free-form, printed as it came.
    let json: Value = client.get(&path).await?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(0)
}

async fn inventory_id(client: &Client, name_or_id: &str) -> anyhow::Result<i64> {
    if let Ok(id) = name_or_id.parse::<i64>() {
        return Ok(id);
    }
    let found: InventoryList = client
        .get(&format!("/api/v1/inventories?name={}", encode(name_or_id)))
        .await?;
    found
        .inventories
        .first()
        .map(|inv| inv.id)
        .ok_or_else(|| anyhow::anyhow!("no inventory named {name_or_id:?}"))
}

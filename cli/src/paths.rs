//! `chunkstream-engine paths`: the local interfaces a `send --path` can
//! name, with their addresses, MTU and state.
//!
//! Interfaces come from `/sys/class/net` (always there on Linux); their
//! addresses from `ip -json addr` (iproute2), so that no unsafe
//! `getifaddrs` call is needed. Without iproute2 the list still shows names,
//! state and MTU, and says where the addresses went.

use anyhow::Result;
use serde_json::json;

use crate::output::{json_line, line};

/// List local interfaces: name, state, MTU, addresses.
#[derive(Debug, clap::Args)]
pub struct PathsArgs {
    /// One JSON object per interface.
    #[arg(long)]
    pub json: bool,
    /// Include interfaces that are down and the loopback interface.
    #[arg(long)]
    pub all: bool,
}

/// One local interface.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Interface {
    /// Kernel name (what `--path NAME=...` takes).
    pub name: String,
    /// `operstate`: up, down, unknown (loopback, tun), ...
    pub state: String,
    /// MTU in bytes.
    pub mtu: u32,
    /// Addresses with prefix length.
    pub addresses: Vec<String>,
}

fn read_sys(name: &str, file: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{name}/{file}"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Addresses per interface from `ip -json addr` output.
pub fn parse_ip_json(text: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(serde_json::Value::Array(ifaces)) = serde_json::from_str(text) else {
        return out;
    };
    for i in ifaces {
        let Some(name) = i["ifname"].as_str() else {
            continue;
        };
        let addrs = i["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| {
                        Some(format!(
                            "{}/{}",
                            x["local"].as_str()?,
                            x["prefixlen"].as_u64()?
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name.to_owned(), addrs);
    }
    out
}

/// The machine's interfaces, sorted by name.
pub fn interfaces() -> (Vec<Interface>, Option<String>) {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let (addrs, note) = match std::process::Command::new("ip")
        .args(["-json", "addr", "show"])
        .output()
    {
        Ok(o) if o.status.success() => (parse_ip_json(&String::from_utf8_lossy(&o.stdout)), None),
        _ => (
            Default::default(),
            Some("addresses unavailable: `ip` (iproute2) is not installed".to_owned()),
        ),
    };
    let list = names
        .into_iter()
        .map(|name| Interface {
            state: read_sys(&name, "operstate"),
            mtu: read_sys(&name, "mtu").parse().unwrap_or(0),
            addresses: addrs.get(&name).cloned().unwrap_or_default(),
            name,
        })
        .collect();
    (list, note)
}

pub fn run(args: PathsArgs) -> Result<()> {
    let (list, note) = interfaces();
    let shown: Vec<&Interface> = list
        .iter()
        .filter(|i| args.all || (i.state != "down" && i.name != "lo"))
        .collect();
    if args.json {
        for i in &shown {
            json_line(&json!(i));
        }
    } else {
        if shown.is_empty() {
            line("no interface is up (try --all)");
        }
        for i in &shown {
            line(&format!(
                "{:<16} {:<8} mtu {:<6} {}",
                i.name,
                i.state,
                i.mtu,
                if i.addresses.is_empty() {
                    "(no address)".to_owned()
                } else {
                    i.addresses.join(" ")
                }
            ));
        }
        line(
            "use: send FILE --path NAME=RECEIVER:PORT (or --path LOCAL_IP=RECEIVER:PORT), once per path",
        );
    }
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ip_json_gives_addresses_per_interface() {
        let text = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},{"family":"inet6","local":"::1","prefixlen":128}]},{"ifname":"eth0","addr_info":[]}]"#;
        let m = super::parse_ip_json(text);
        assert_eq!(m["lo"], vec!["127.0.0.1/8", "::1/128"]);
        assert!(m["eth0"].is_empty());
        assert!(super::parse_ip_json("not json").is_empty());
    }

    #[test]
    fn loopback_is_listed_with_its_address() {
        let (list, note) = super::interfaces();
        let lo = list.iter().find(|i| i.name == "lo").expect("lo exists");
        assert!(lo.mtu > 0);
        if note.is_none() {
            assert!(lo.addresses.iter().any(|a| a == "127.0.0.1/8"), "{lo:?}");
        }
    }
}

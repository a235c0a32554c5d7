//! `chunkstream-engine bench` and `compare`: thin wrappers around the
//! bench-harness crate.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chunkstream_bench_harness::compare::table;
use chunkstream_bench_harness::report::Report;
use chunkstream_bench_harness::runner::{RunnerConfig, run_scenario};
use chunkstream_bench_harness::scenario::Scenario;

/// Run a loss/delay/rate scenario over emulated links and write a report.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A scenario file, or the name of one in bench-harness/scenarios/ (quick, loss-sweep, multipath).
    #[arg(value_name = "SCENARIO")]
    pub scenario: String,
    /// Folder the JSON report is written to, as SCENARIO.json.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: PathBuf,
    /// Scratch folder for the generated file and received copies [default: a temporary folder].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// Put bench reports side by side: one table, ratios against the first.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Reports written by `bench`.
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Also draw the reports into this SVG file: goodput against loss if
    /// they sweep loss, else goodput per contender.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Finds a scenario by path, or by name in bench-harness/scenarios/ under
/// the current folder or the repository the executable was built in.
fn find_scenario(arg: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(arg);
    if direct.is_file() {
        return Ok(direct);
    }
    let file = format!("{arg}.toml");
    let mut roots = vec![PathBuf::from(".")];
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/chunkstream-engine → the repository.
        if let Some(repo) = exe.ancestors().nth(3) {
            roots.push(repo.to_owned());
        }
    }
    for root in &roots {
        let candidate = root.join("bench-harness/scenarios").join(&file);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "no scenario {arg:?}: not a file, and no bench-harness/scenarios/{file} here or next to the executable"
    )
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let path = find_scenario(&args.scenario)?;
    let scenario = Scenario::load(&path)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let scratch;
    let work_dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            scratch = tempfile::tempdir()?;
            scratch.path().to_owned()
        }
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let cfg = RunnerConfig {
        exe: std::env::current_exe().context("cannot find this executable")?,
        work_dir,
        command,
    };
    eprintln!(
        "bench {} ({}): {}",
        scenario.name,
        path.display(),
        scenario.description
    );
    let report = run_scenario(&scenario, &cfg, |line| eprintln!("{line}")).await?;
    let out = args.out.join(format!("{}.json", scenario.name));
    write_report(&report, &out)?;
    println!("{}", table(std::slice::from_ref(&report)));
    println!("report: {}", out.display());
    Ok(())
}

fn write_report(report: &Report, out: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(out, text + "\n").with_context(|| format!("cannot write {}", out.display()))
}

pub fn compare(args: CompareArgs) -> Result<()> {
    let reports = args
        .reports
        .iter()
        .map(|p| Report::load(p))
        .collect::<Result<Vec<_>>>()?;
    for (i, (r, p)) in reports.iter().zip(&args.reports).enumerate() {
        println!(
            "#{}: {} — {} on {} ({}, {} cores, kernel {})",
            i + 1,
            p.display(),
            r.scenario_name(),
            r.backend,
            r.machine.cpu,
            r.machine.cores,
            r.machine.kernel
        );
    }
    println!();
    print!("{}", table(&reports));
    if let Some(svg) = &args.plot {
        chunkstream_bench_harness::plot::plot(&reports, svg)
            .with_context(|| format!("cannot draw {}", svg.display()))?;
        println!("\nplot: {}", svg.display());
    }
    Ok(())
}

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "kubelab", version, about = "Watch a kubelab node from outside: top, experiments", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A live view of a node's containers against their limits.
    Top(kubelab_tools::top::TopArgs),
    /// Run a pod under given limits, sample it, and write a report with plots.
    #[command(subcommand)]
    Experiment(kubelab_tools::experiment::ExperimentCommand),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Top(args) => Ok(kubelab_tools::top::run(args)?),
        Command::Experiment(cmd) => {
            let dir = kubelab_tools::experiment::run(cmd)?;
            println!("{}", dir.join("report.md").display());
            Ok(())
        }
    }
}

use std::process::ExitCode;

use clap::Parser as _;
use tcptrace::cli::{Cli, Command};

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_target(false)
        .init();
}

/// EX_SOFTWARE (sysexits.h): an internal error.
const PANIC_EXIT: i32 = 70;

/// A panic in any thread ends the process with a non-zero status: a daemon with a dead
/// worker would otherwise keep running half-blind, or hang at shutdown. Exiting closes
/// every descriptor, and with them the kernel detaches the programs and frees the maps.
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("tcptrace: internal error (a thread panicked); exiting");
        std::process::exit(PANIC_EXIT);
    }));
}

fn main() -> ExitCode {
    // clap prints its own message and exits with 2 on bad arguments.
    let cli = Cli::parse();
    init_logging(cli.verbose);
    exit_on_panic();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tcptrace: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Watch(args) => {
                let summary = tcptrace::watch::run(&args, &mut std::io::stdout().lock()).await?;
                eprintln!("tcptrace: {summary}");
                anyhow::Ok(())
            }
            Command::Doctor(args) => {
                let checks = tcptrace::doctor::run(args.listen, args.web_config_file.as_deref());
                print!("{}", tcptrace::doctor::render(&checks));
                if !tcptrace::doctor::passed(&checks) {
                    anyhow::bail!("some checks failed; see above");
                }
                anyhow::Ok(())
            }
            Command::Serve(args) => {
                // Before anything is loaded: a bad web config file stops the start here.
                let http = args.web.http_config(args.listen)?;
                let summary = tcptrace::daemon::run(
                    &args.trace.config(),
                    Some(http),
                    &mut tcptrace::daemon::Quiet,
                )
                .await?;
                log::info!("stopped: {summary}");
                anyhow::Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcptrace: {err:#}");
            ExitCode::FAILURE
        }
    }
}

//! `wxbroker check-config`: validates a configuration file and prints the
//! effective settings, secrets masked, and its warnings.

use std::path::Path;
use std::process::ExitCode;

use wxbroker::config::Config;
use wxbroker::errors::Chain;

use super::RUNTIME_FAILURE;

pub fn run(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            print!("{}", config.render_effective());
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", Chain(&err));
            ExitCode::from(RUNTIME_FAILURE)
        }
    }
}

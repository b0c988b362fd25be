//! Placeholder until this task lands.

use std::path::Path;

pub fn run(_root: &Path, _flag: bool, _update: bool) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

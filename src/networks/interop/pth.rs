//! PyTorch `.pth` state dicts (to come).

use super::StateDict;

pub(super) fn read(_bytes: &[u8]) -> Result<StateDict, String> {
    Err("PyTorch .pth files are not read yet; convert to safetensors".into())
}

//! The restoration task of a pipeline. The lowest layer: datasets, training and reports all
//! branch on it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Denoise,
    Derain,
    Deblur,
}

impl Task {
    /// Range of the images fed to the diffusion network (METHOD.md): \[0,1\] for denoising,
    /// [−1,1] for deraining and deblurring.
    pub fn diffusion_signed(self) -> bool {
        !matches!(self, Task::Denoise)
    }
}

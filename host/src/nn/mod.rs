//! Neural-network pieces trained with candle: encoders, few-shot methods,
//! pre-training objectives (CosFace, Siamese), support-set fine-tuning, the
//! optimiser and checkpoints.

pub mod adam;
pub mod block;
pub mod checkpoint;
pub mod conv;
pub mod cosface;
pub mod depthwise;
pub mod encoder;
pub mod finetune;
pub mod fused;
pub mod im2col;
pub mod init;
mod kernel;
pub mod maml;
pub mod matching;
pub mod method;
pub mod mobile;
pub mod ops;
pub mod pool;
pub mod relu_pool;
pub mod siamese;
#[cfg(test)]
mod testing;

pub use candle_core::{DType, Device, Result, Tensor};

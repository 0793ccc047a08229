//! Adam (Kingma & Ba, 2015) with state that can be saved and restored, so a
//! resumed run continues exactly where it stopped.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Adam over a set of named variables.
pub struct Adam {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Steps taken so far.
    pub step: usize,
    /// Learning rate.
    pub lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    /// Adam with the usual betas (0.9, 0.999) and epsilon 1e-8.
    pub fn new(mut vars: Vec<(String, Var)>, lr: f64) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Adam {
            m: vars.iter().map(|(_, v)| zeros(v)).collect::<Result<_>>()?,
            v: vars.iter().map(|(_, v)| zeros(v)).collect::<Result<_>>()?,
            vars,
            step: 0,
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        })
    }

    /// One update from the gradients of a backward pass. Variables without a
    /// gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: otherwise each moment would keep the step's whole graph
            // alive, and through the previous moment every earlier step's too.
            let g = g.detach();
            self.m[i] = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?.detach();
            self.v[i] = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?.detach();
            let m_hat = (&self.m[i] / c1)?;
            let v_hat = (&self.v[i] / c2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            var.set(&var.as_tensor().detach().sub(&(update * self.lr)?)?)?;
        }
        Ok(())
    }

    /// Whether any moment estimate still references a computation graph (which
    /// would keep every step's activations alive: a leak).
    pub fn moments_track_graph(&self) -> bool {
        self.m.iter().chain(&self.v).any(|t| t.track_op())
    }

    /// Saves the moment estimates (the step count and rate go in the run's state).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            map.insert(format!("m.{name}"), self.m[i].clone());
            map.insert(format!("v.{name}"), self.v[i].clone());
        }
        candle_core::safetensors::save(&map, path)
    }

    /// Restores moment estimates saved by [`Adam::save`] for the same variables.
    pub fn load(&mut self, path: &Path, step: usize) -> Result<()> {
        let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu)?;
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let t = map.get(&format!("{prefix}.{name}")).ok_or_else(|| {
                    candle_core::Error::Msg(format!("{}: no {prefix}.{name}", path.display()))
                })?;
                if t.dims() != var.dims() {
                    candle_core::bail!(
                        "{}: {prefix}.{name} has shape {:?}, expected {:?}",
                        path.display(),
                        t.dims(),
                        var.dims()
                    );
                }
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

//! What each training method minimises, behind one `Objective` trait, over
//! the bank of training images.

use super::config::{DistillConfig, RunConfig, SiameseLoss, TrainConfig};
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use fewshot_core::{Distance, Recipe};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::augment::{rotate90, FaceAugment, Shape};
use crate::data::Tensors;
use crate::embed::{check_shape, EmbedError, Embedder, Embeddings};
use crate::episode::{EpisodeSampler, EpisodeShape};
use crate::eval::{evaluate_episodes_with, EpisodeClassifier};
use crate::nn::cosface::CosFace;
use crate::nn::encoder::{Encoder, EncoderConfig};
use crate::nn::maml::{self, MamlConfig};
use crate::nn::matching::{MatchingHead, MatchingNet};
use crate::nn::method::{BatchLoss, EpisodeTensors, FewShotMethod, ProtoNet};
use crate::nn::siamese::{PairwiseHead, TripletLoss};

/// Images in memory grouped into classes (a rotated copy counts as its own class).
pub(super) struct Bank {
    pub(super) images: Vec<f32>,
    pub(super) per_image: usize,
    pub(super) classes: Vec<Vec<usize>>,
    /// The row of the source tensors each image came from.
    pub(super) source: Vec<usize>,
    /// Each class's group (its alphabet; a rotation makes its own alphabet).
    pub(super) groups: Vec<usize>,
}

impl Bank {
    /// The images of `classes` (rows of `tensors`), each class also in its
    /// three other quarter turns with `rotations`. `groups[i]` is class `i`'s
    /// alphabet; a rotated class goes to its alphabet's rotated copy.
    pub(super) fn build(
        tensors: &Tensors,
        classes: &[Vec<usize>],
        groups: &[usize],
        rotations: bool,
        shape: Shape,
    ) -> Bank {
        let per_image = shape.len();
        let turns: &[u8] = if rotations { &[0, 1, 2, 3] } else { &[0] };
        let mut images = Vec::new();
        let mut out = Vec::new();
        let mut source = Vec::new();
        let mut rotated_groups = Vec::new();
        assert_eq!(groups.len(), classes.len(), "one group per class");
        let span = groups.iter().max().map_or(1, |g| g + 1);
        for &turn in turns {
            for (c, rows) in classes.iter().enumerate() {
                rotated_groups.push(usize::from(turn) * span + groups[c]);
                let mut ids = Vec::new();
                for &r in rows {
                    ids.push(images.len() / per_image);
                    images.extend(rotate90(tensors.row(r), shape, turn));
                    source.push(r);
                }
                out.push(ids);
            }
        }
        Bank {
            images,
            per_image,
            classes: out,
            source,
            groups: rotated_groups,
        }
    }

    pub(super) fn row(&self, i: usize) -> &[f32] {
        &self.images[i * self.per_image..(i + 1) * self.per_image]
    }

    pub(super) fn as_tensors(&self, recipe: Recipe) -> Tensors {
        Tensors {
            recipe,
            data: self.images.clone(),
            paths: vec![PathBuf::new(); self.images.len() / self.per_image],
        }
    }
}

/// An encoder being trained, seen as an [`Embedder`] (inference mode).
pub(super) struct Live<'a> {
    pub(super) encoder: &'a dyn Encoder,
    pub(super) recipe: Recipe,
    pub(super) dim: usize,
}

impl Embedder for Live<'_> {
    fn name(&self) -> String {
        "training encoder".into()
    }
    fn recipe(&self) -> Recipe {
        self.recipe
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed(&self, images: &[f32]) -> Result<Vec<f32>, EmbedError> {
        let r = self.recipe;
        check_shape(images, r.len())?;
        let backend = |e: candle_core::Error| EmbedError::Backend(e.to_string());
        let x = Tensor::from_slice(
            images,
            (images.len() / r.len(), r.channels, r.height, r.width),
            &Device::Cpu,
        )
        .map_err(backend)?;
        self.encoder
            .embed(&x, false)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .map_err(backend)
    }
}

/// What an objective is built over: the training images (and, for
/// distillation, the files they came from).
pub(super) struct Teach<'a> {
    pub(super) bank: &'a Bank,
    pub(super) tensors: &'a Tensors,
    pub(super) progress: bool,
}

/// A batch of `p` distinct classes × `k` images each (distinct while the
/// class has `k`), with labels `0..p`.
fn pk_batch(
    classes: &[Vec<usize>],
    p: usize,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<usize>, Vec<u32>) {
    let mut ids = Vec::with_capacity(p * k);
    let mut labels = Vec::with_capacity(p * k);
    for (label, c) in rand::seq::index::sample(rng, classes.len(), p)
        .into_iter()
        .enumerate()
    {
        let images = &classes[c];
        if images.len() >= k {
            ids.extend(
                rand::seq::index::sample(rng, images.len(), k)
                    .into_iter()
                    .map(|i| images[i]),
            );
        } else {
            ids.extend((0..k).map(|_| images[rng.random_range(0..images.len())]));
        }
        labels.extend(std::iter::repeat_n(label as u32, k));
    }
    (ids, labels)
}

/// The training images a step draws from, and how a drawn batch becomes a
/// tensor (augmented as the run says).
pub(super) struct Batches<'a> {
    /// The training images.
    pub(super) bank: &'a Bank,
    /// Their shape.
    pub(super) shape: Shape,
    /// The training classes: image ids of the bank.
    pub(super) classes: &'a [Vec<usize>],
    /// The images of `ids` as a `(n, c, h, w)` tensor, augmented with `rng`.
    pub(super) gather: &'a dyn Fn(&[usize], &mut ChaCha8Rng) -> candle_core::Result<Tensor>,
}

/// A training objective: what one step draws and the loss it trains. The
/// loop around it (learning rate, checkpoints, validation, resume) is one
/// for every objective.
pub(super) trait Objective {
    /// The method name checkpoints record.
    fn method(&self) -> String;
    /// The encoder being trained (validated and saved).
    fn encoder(&self) -> &dyn Encoder;
    /// The face augmentation of its training images, if any (else the
    /// run's affine distortions apply).
    fn face_augment(&self) -> Option<FaceAugment> {
        None
    }
    /// Accuracy on the validation episodes; by default the encoder's
    /// embeddings classified by prototypes.
    fn validate(&self, v: &Validation<'_>) -> anyhow::Result<crate::eval::EpisodeReport> {
        v.by_embeddings(self.encoder(), &EpisodeClassifier::Prototypes(v.distance))
    }
    /// Fixes what the objective holds fixed, once the variables have their
    /// seeded initial values (a resumed run's weights load after it).
    fn initialise(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// The loss value, training accuracy and gradients of step `step`
    /// (0-based), drawing its batch from `batches` with `rng`.
    fn gradients(
        &self,
        batches: &Batches<'_>,
        step: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)>;
}

/// The value, accuracy and backward pass of a step's loss.
fn backward(
    (loss, accuracy): (Tensor, f64),
) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)> {
    let value = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
    Ok((value, accuracy, loss.backward()?))
}

/// The held-out episodes a run validates on.
pub(super) struct Validation<'a> {
    pub(super) images: &'a Tensors,
    pub(super) sampler: &'a EpisodeSampler,
    pub(super) episodes: usize,
    pub(super) seed: u64,
    pub(super) recipe: Recipe,
    pub(super) dim: usize,
    /// The run's distance (prototypes' default).
    pub(super) distance: Distance,
}

impl Validation<'_> {
    /// The episodes classified by `classifier` over `encoder`'s embeddings.
    fn by_embeddings(
        &self,
        encoder: &dyn Encoder,
        classifier: &EpisodeClassifier,
    ) -> anyhow::Result<crate::eval::EpisodeReport> {
        let live = Live {
            encoder,
            recipe: self.recipe,
            dim: self.dim,
        };
        let emb = Embeddings::compute(&live, self.images, 512, false)?;
        Ok(evaluate_episodes_with(
            &emb,
            self.sampler,
            self.episodes,
            self.seed,
            classifier,
            false,
        )?)
    }
}

/// An episodic method (Prototypical Networks, Matching Networks): one N-way
/// K-shot episode a step.
struct Episodic<M> {
    method: M,
    name: &'static str,
    /// How validation classifies (else by prototypes).
    classifier: Option<EpisodeClassifier>,
    sampler: EpisodeSampler,
    shape: EpisodeShape,
    seed: u64,
}

impl<M: FewShotMethod> Objective for Episodic<M> {
    fn method(&self) -> String {
        self.name.into()
    }
    fn encoder(&self) -> &dyn Encoder {
        self.method.encoder()
    }
    fn validate(&self, v: &Validation<'_>) -> anyhow::Result<crate::eval::EpisodeReport> {
        let classifier =
            (self.classifier.clone()).unwrap_or(EpisodeClassifier::Prototypes(v.distance));
        v.by_embeddings(self.encoder(), &classifier)
    }
    fn gradients(
        &self,
        batches: &Batches<'_>,
        step: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)> {
        let episode = self.sampler.episode(self.seed, step as u64);
        let batch = EpisodeTensors {
            support: (batches.gather)(&episode.support, rng)?,
            query: (batches.gather)(&episode.query, rng)?,
            shape: self.shape,
        };
        backward(self.method.loss(&batch, true)?)
    }
}

/// MAML ([`maml`]): a meta-batch of N-way K-shot tasks a step; each task's
/// query loss after the inner loop is back-propagated on its own (so one
/// task's graph is held at a time) and the gradients summed.
struct Maml {
    /// The Conv-4 encoder over the same variables (validated by prototypes
    /// nowhere; saved and exported).
    encoder: Box<dyn Encoder>,
    /// The meta-parameters in [`maml::forward`]'s order.
    params: Vec<Tensor>,
    /// Running mean and variance of each block's batch norm.
    running: Vec<(Var, Var)>,
    config: MamlConfig,
    sampler: EpisodeSampler,
    shape: EpisodeShape,
    seed: u64,
}

impl Objective for Maml {
    fn method(&self) -> String {
        "maml".into()
    }
    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }
    fn gradients(
        &self,
        batches: &Batches<'_>,
        step: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)> {
        let tasks = self.config.meta_batch.max(1);
        let ys = maml::class_major_labels(self.shape.k_way, self.shape.n_shot, &Device::Cpu)?;
        let yq = maml::class_major_labels(self.shape.k_way, self.shape.q_queries, &Device::Cpu)?;
        // Only the meta-parameters' gradients are kept (detached) between
        // tasks: a task's whole gradient store, every node's gradient with its
        // graph under second order, is dropped as soon as it is read.
        let mut total = candle_core::backprop::GradStore::default();
        let (mut loss_sum, mut acc_sum) = (0.0, 0.0);
        for t in 0..tasks {
            let episode = self.sampler.episode(self.seed, (step * tasks + t) as u64);
            let support = (batches.gather)(&episode.support, rng)?;
            let query = (batches.gather)(&episode.query, rng)?;
            let mut stats = Vec::new();
            let (grads, loss, acc) = maml::task_gradients(
                &self.params,
                &support,
                &ys,
                &query,
                &yq,
                &self.config,
                (t == 0).then_some(&mut stats),
            )?;
            if t == 0 {
                maml::update_running(&self.running, &stats)?;
            }
            loss_sum += loss;
            acc_sum += acc;
            for (i, (p, g)) in self.params.iter().zip(grads).enumerate() {
                let Some(g) = g else { continue };
                if self.config.zero_head && i >= maml::HEAD {
                    continue;
                }
                let g = (g / tasks as f64)?;
                let added = match total.get(p) {
                    Some(s) => (s + g)?,
                    None => g,
                };
                total.insert(p, added);
            }
        }
        if tasks == 0 {
            bail!("a meta-batch of no tasks");
        }
        let grads = total;
        Ok((loss_sum / tasks as f64, acc_sum / tasks as f64, grads))
    }
    /// The zero head starts at zero, and stays so: the optimiser never
    /// sees its gradient.
    fn initialise(&self) -> anyhow::Result<()> {
        if self.config.zero_head {
            for t in &self.params[maml::HEAD..] {
                Var::from_tensor(t)?.set(&t.zeros_like()?)?;
            }
        }
        Ok(())
    }
    /// By the test-time inner loop on each episode's images.
    fn validate(&self, v: &Validation<'_>) -> anyhow::Result<crate::eval::EpisodeReport> {
        let model = maml::MamlModel {
            params: self.params.clone(),
            config: self.config,
            k_way: self.shape.k_way,
        };
        Ok(crate::eval::evaluate_episodes_maml(
            v.images, v.sampler, v.episodes, v.seed, &model, false,
        )?)
    }
}

/// How a batch objective draws its images.
enum Draw {
    /// `batch` images uniformly over every training image, each with its class.
    Uniform {
        batch: usize,
        ids: Vec<usize>,
        labels: Vec<u32>,
    },
    /// P classes × K images ([`pk_batch`]).
    ClassesTimesImages { classes: usize, per_class: usize },
}

/// A loss over a labelled batch of embeddings (CosFace, the Siamese losses).
struct Batched {
    encoder: Box<dyn Encoder>,
    loss: Box<dyn BatchLoss>,
    draw: Draw,
    name: &'static str,
    augment: Option<FaceAugment>,
}

impl Objective for Batched {
    fn method(&self) -> String {
        self.name.into()
    }
    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }
    fn face_augment(&self) -> Option<FaceAugment> {
        self.augment
    }
    fn gradients(
        &self,
        batches: &Batches<'_>,
        _step: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)> {
        let (ids, y) = match &self.draw {
            Draw::Uniform { batch, ids, labels } => {
                let picks: Vec<usize> = (0..*batch)
                    .map(|_| rng.random_range(0..ids.len()))
                    .collect();
                (
                    picks.iter().map(|&p| ids[p]).collect::<Vec<_>>(),
                    picks.iter().map(|&p| labels[p]).collect(),
                )
            }
            Draw::ClassesTimesImages { classes, per_class } => {
                pk_batch(batches.classes, *classes, *per_class, rng)
            }
        };
        let x = (batches.gather)(&ids, rng)?;
        backward(
            self.loss
                .batch_loss(&self.encoder.embed(&x, true)?, &y, rng)?,
        )
    }
}

/// Distillation: a batch drawn uniformly over the training images (and,
/// with several views, over their views), each flipped or not at random,
/// against the teacher's target for what it shows.
struct Distill {
    encoder: Box<dyn Encoder>,
    /// View 0 (the training bank's own images) first; each view's targets
    /// indexed by the bank's image ids.
    views: Vec<View>,
    batch: usize,
    relation: f64,
    augment: Option<FaceAugment>,
    /// The teacher's plain embeddings of the training images `(n, dim)` and
    /// the bank term's settings, if the run has one.
    bank: Option<(Tensor, crate::distill::BankTerm)>,
}

/// One view of the training images and the teacher's targets for it.
struct View {
    images: ViewImages,
    targets: crate::distill::Targets,
}

/// What the student sees of a view.
enum ViewImages {
    /// The bank's own images (view 0).
    Bank,
    /// Jittered crops, in bank id order.
    Own(Vec<f32>),
    /// Blends of the bank's images, in bank id order.
    Mixed(Vec<crate::distill::views::Mix>),
}

impl ViewImages {
    /// What the student sees of image `id` (`per` values), the bank's
    /// images being `bank(i)`.
    fn image<'a>(
        &'a self,
        id: usize,
        per: usize,
        bank: impl Fn(usize) -> &'a [f32],
    ) -> std::borrow::Cow<'a, [f32]> {
        use std::borrow::Cow;
        match self {
            ViewImages::Bank => Cow::Borrowed(bank(id)),
            ViewImages::Own(images) => Cow::Borrowed(&images[id * per..(id + 1) * per]),
            ViewImages::Mixed(mixes) => {
                let m = mixes[id];
                Cow::Owned(crate::distill::views::blend(
                    bank(id),
                    bank(m.partner),
                    m.share,
                ))
            }
        }
    }
}

impl Objective for Distill {
    fn method(&self) -> String {
        "distill".into()
    }
    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }
    /// The mean student-teacher cosine stands for the accuracy.
    fn gradients(
        &self,
        batches: &Batches<'_>,
        _step: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)> {
        let shape = batches.shape;
        let dim = self.views[0].targets.dim;
        let per = shape.len();
        let mut data = Vec::with_capacity(self.batch * per);
        let mut targets = Vec::with_capacity(self.batch * dim);
        let mut ids = Vec::with_capacity(self.batch);
        for _ in 0..self.batch {
            let id = rng.random_range(0..self.views[0].targets.len());
            ids.push(id);
            let mirror = rng.random_bool(0.5);
            // One view draws nothing more, so such runs keep their batches.
            let view = match self.views.len() {
                1 => &self.views[0],
                n => &self.views[rng.random_range(0..n)],
            };
            let image = view.images.image(id, per, |i| batches.bank.row(i));
            let image = &image[..];
            match &self.augment {
                Some(a) => data.extend(a.apply_with_flip(rng, image, shape, mirror)),
                None if mirror => data.extend(crate::augment::hflip(image, shape)),
                None => data.extend_from_slice(image),
            }
            targets.extend_from_slice(view.targets.row(id, mirror));
        }
        let x = Tensor::from_vec(
            data,
            (self.batch, shape.channels, shape.height, shape.width),
            &Device::Cpu,
        )?;
        let t = Tensor::from_vec(targets, (self.batch, dim), &Device::Cpu)?;
        let student = self.encoder.embed(&x, true)?;
        let (mut loss, mean_cos) = crate::distill::distill_loss(&student, &t, self.relation)?;
        if let Some((bank, term)) = &self.bank {
            let kl = crate::distill::bank_loss(&student, &t, bank, &ids, term.temperature)?;
            loss = (loss + (kl * term.weight)?)?;
        }
        backward((loss, mean_cos))
    }
}

/// Each view of the training bank's images (view 0: the bank's own) with
/// the teacher's targets for it, in bank id order.
fn distill_views(
    distill: &DistillConfig,
    bank: &Bank,
    tensors: &Tensors,
    dim: usize,
    progress: bool,
) -> anyhow::Result<Vec<View>> {
    use crate::distill::views::view_recipe;
    use crate::distill::TeacherInput;
    let plain = crate::distill::Teacher::load(&distill.teacher, None)?;
    if plain.dim() != dim {
        bail!(
            "the teacher {} embeds in {} dimensions, the student in {dim}: give the student a linear embedding of {}",
            distill.teacher.display(),
            plain.dim(),
            plain.dim()
        );
    }
    let paths: Vec<PathBuf> = bank
        .source
        .iter()
        .map(|&r| tensors.paths[r].clone())
        .collect();
    let cache = crate::distill::targets::default_cache();
    let teacher_recipe = plain.recipe();
    let mut views = Vec::with_capacity(distill.views);
    for v in 0..distill.views {
        let student = view_recipe(&tensors.recipe, v)
            .map_err(|e| anyhow::anyhow!("the student's recipe: {e}"))?;
        let own;
        let teacher = match (distill.teacher_input, v) {
            (TeacherInput::Own, 0) => &plain,
            (TeacherInput::Own, _) => {
                let recipe = view_recipe(&teacher_recipe, v)
                    .map_err(|e| anyhow::anyhow!("teacher {}: {e}", distill.teacher.display()))?;
                own = crate::distill::Teacher::load(&distill.teacher, Some(recipe))?;
                &own
            }
            (TeacherInput::Student, _) => {
                own = crate::distill::Teacher::load(&distill.teacher, None)?.at_input(&student)?;
                &own
            }
        };
        let images = match v {
            0 => ViewImages::Bank,
            _ => ViewImages::Own(Tensors::load(&paths, &student, progress)?.data),
        };
        let targets = crate::distill::teacher_targets(teacher, &paths, cache.as_deref(), progress)?;
        views.push(View { images, targets });
    }
    // Mixed views blend the plain crops: the teacher of view 0 makes their targets.
    if distill.mixup > 0 && !matches!(tensors.recipe.crop, fewshot_core::Crop::Aligned(_)) {
        bail!("--mixup blends aligned faces, whose two crops show one picture: it needs --align");
    }
    let plain_teacher = match distill.teacher_input {
        TeacherInput::Own => plain,
        TeacherInput::Student => plain.at_input(&tensors.recipe)?,
    };
    for m in 0..distill.mixup {
        let mixes = crate::distill::views::mixes(paths.len(), m)
            .map_err(|e| anyhow::anyhow!("--mixup: {e}"))?;
        let targets = crate::distill::mixed_targets(
            &plain_teacher,
            &paths,
            &mixes,
            cache.as_deref(),
            progress,
        )?;
        views.push(View {
            images: ViewImages::Mixed(mixes),
            targets,
        });
    }
    Ok(views)
}

/// The training episodes: `config`'s shape over the bank's classes, a share
/// of them within one alphabet when the run asks for it.
fn training_episodes(bank: &Bank, config: &TrainConfig) -> anyhow::Result<EpisodeSampler> {
    let sampler = EpisodeSampler::new(&bank.classes, config.shape, None, config.seed)
        .context("training episodes")?;
    if config.within_alphabet > 0.0 {
        return sampler
            .within_groups(&bank.groups, config.within_alphabet)
            .context("--within-alphabet");
    }
    Ok(sampler)
}

/// The run's objective over the training classes, its variables in `vb`
/// (the encoder's first, then the head's under `head.`).
pub(super) fn objective(
    run: &RunConfig,
    teach: Teach<'_>,
    distance: Distance,
    vb: VarBuilder,
) -> anyhow::Result<Box<dyn Objective>> {
    let classes = &teach.bank.classes[..];
    let config = &run.base;
    let encoder = config.encoder.build(vb.clone())?;
    let dim = config.encoder.dim();
    let objectives = [
        run.cosface.is_some(),
        run.siamese.is_some(),
        run.distill.is_some(),
        run.matching.is_some(),
        run.maml.is_some(),
    ];
    if objectives.iter().filter(|&&o| o).count() > 1 {
        bail!("internal: a run has one objective");
    }
    let episodic = !(run.cosface.is_some() || run.siamese.is_some() || run.distill.is_some());
    if config.within_alphabet > 0.0 && !episodic {
        bail!("--within-alphabet shapes episodes: protonet, matching and maml only");
    }
    if run.maml.is_some() && config.val_k_way.is_some_and(|k| k != config.shape.k_way) {
        bail!(
            "MAML validates with its own {}-way head: leave out --val-k-way",
            config.shape.k_way
        );
    }
    if let Some(m) = run.maml {
        let EncoderConfig::Conv4 {
            embedding: None, ..
        } = config.encoder
        else {
            bail!("MAML trains Conv-4 without a linear embedding (--arch conv4)");
        };
        if config.encoder.block_depths() != Some([1; 4]) {
            bail!("MAML's functional Conv-4 has one convolution per block: leave out --depths");
        }
        candle_nn::linear(dim, config.shape.k_way, vb.pp("head"))?;
        let (Some(widths), (in_channels, _)) =
            (config.encoder.block_widths(), config.encoder.input())
        else {
            bail!("internal: MAML's encoder is Conv-4");
        };
        let get = |name: &str, shape: &[usize]| -> anyhow::Result<Var> {
            let (prefix, last) = name.rsplit_once('.').unwrap_or(("", name));
            let t = vb.pp(prefix).get(shape, last)?;
            Ok(Var::from_tensor(&t)?)
        };
        let shapes = maml::parameter_shapes(in_channels, widths, dim, config.shape.k_way);
        let params = maml::parameter_names()
            .iter()
            .zip(&shapes)
            .map(|(n, s)| get(n, s).map(|v| v.as_tensor().clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let running = (0..4)
            .map(|b| {
                Ok((
                    get(&format!("block{b}.bn.running_mean"), &[widths[b]])?,
                    get(&format!("block{b}.bn.running_var"), &[widths[b]])?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok(Box::new(Maml {
            encoder,
            params,
            running,
            config: m,
            sampler: training_episodes(teach.bank, config)?,
            shape: config.shape,
            seed: config.seed,
        }));
    }
    if let Some(m) = run.matching {
        let head = MatchingHead::new(m, distance, dim, vb.pp("head"))?;
        return Ok(Box::new(Episodic {
            classifier: Some(EpisodeClassifier::Matching(std::sync::Arc::new(
                head.clone(),
            ))),
            method: MatchingNet { encoder, head },
            name: "matching",
            sampler: training_episodes(teach.bank, config)?,
            shape: config.shape,
            seed: config.seed,
        }));
    }
    if let Some(d) = &run.distill {
        let views = distill_views(d, teach.bank, teach.tensors, dim, teach.progress)?;
        let bank = match d.bank {
            None => None,
            Some(term) => {
                let plain = &views[0].targets;
                let rows: Vec<f32> = (0..plain.len())
                    .flat_map(|i| plain.row(i, false).iter().copied())
                    .collect();
                let rows = Tensor::from_vec(rows, (plain.len(), plain.dim), &Device::Cpu)?;
                Some((rows, term))
            }
        };
        return Ok(Box::new(Distill {
            encoder,
            views,
            batch: d.batch,
            relation: d.relation,
            augment: d.augment,
            bank,
        }));
    }
    Ok(match (&run.cosface, &run.siamese) {
        (None, None) => Box::new(Episodic {
            method: ProtoNet { encoder, distance },
            name: "protonet",
            classifier: None,
            sampler: training_episodes(teach.bank, config)?,
            shape: config.shape,
            seed: config.seed,
        }),
        (Some(c), None) => Box::new(Batched {
            encoder,
            loss: Box::new(CosFace::new(
                classes.len(),
                dim,
                c.scale,
                c.margin,
                vb.pp("head"),
            )?),
            // CosFace draws images uniformly; each knows its class.
            draw: Draw::Uniform {
                batch: c.batch,
                ids: classes.iter().flatten().copied().collect(),
                labels: classes
                    .iter()
                    .enumerate()
                    .flat_map(|(c, ids)| ids.iter().map(move |_| c as u32))
                    .collect(),
            },
            name: "cosface",
            augment: c.augment,
        }),
        (None, Some(s)) => {
            if classes.len() < s.classes {
                bail!(
                    "Siamese batches of {} classes, but only {} training classes",
                    s.classes,
                    classes.len()
                );
            }
            let loss: Box<dyn BatchLoss> = match s.loss {
                SiameseLoss::Pairwise => Box::new(PairwiseHead::new(dim, vb.pp("head"))?),
                SiameseLoss::Triplet {
                    mining,
                    margin,
                    distance,
                } => Box::new(TripletLoss {
                    margin,
                    distance,
                    mining,
                }),
            };
            Box::new(Batched {
                encoder,
                loss,
                draw: Draw::ClassesTimesImages {
                    classes: s.classes,
                    per_class: s.per_class,
                },
                name: s.method(),
                augment: s.augment,
            })
        }
        (Some(_), Some(_)) => bail!("internal: a run has one objective"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distill::views::Mix;

    #[test]
    fn a_views_image_is_the_banks_its_own_or_the_blend_of_two_bank_images() {
        let bank = [vec![1.0f32, 2.0], vec![3.0, -2.0], vec![0.0, 4.0]];
        let row = |i: usize| &bank[i][..];
        assert_eq!(&*ViewImages::Bank.image(1, 2, row), &[3.0, -2.0]);
        let own = ViewImages::Own(vec![9.0, 8.0, 7.0, 6.0, 5.0, 4.0]);
        assert_eq!(&*own.image(2, 2, row), &[5.0, 4.0]);
        let mixed = ViewImages::Mixed(vec![
            Mix {
                partner: 2,
                share: 0.25,
            },
            Mix {
                partner: 0,
                share: 0.5,
            },
            Mix {
                partner: 1,
                share: 0.1,
            },
        ]);
        // Image 1 blended half and half with image 0; image 0 a quarter image 2.
        assert_eq!(&*mixed.image(1, 2, row), &[2.0, 0.0]);
        assert_eq!(&*mixed.image(0, 2, row), &[0.75, 2.5]);
    }

    /// A rotated class belongs to its alphabet's rotated copy: four quarter
    /// turns of two alphabets make eight groups, each class keeping its own.
    #[test]
    fn bank_groups_rotated_classes_by_alphabet_and_turn() {
        let shape = Shape {
            channels: 1,
            height: 2,
            width: 2,
        };
        let tensors = Tensors {
            recipe: Recipe {
                width: 2,
                height: 2,
                ..Recipe::OMNIGLOT_28
            },
            data: (0..12).map(|v| v as f32).collect(),
            paths: vec![PathBuf::new(); 3],
        };
        let classes = [vec![0], vec![1], vec![2]];
        let bank = Bank::build(&tensors, &classes, &[0, 1, 0], true, shape);
        assert_eq!(bank.groups, [0, 1, 0, 2, 3, 2, 4, 5, 4, 6, 7, 6]);
        assert_eq!(bank.classes.len(), 12);
        // The second turn of class 2 is its image turned once.
        assert_eq!(
            bank.row(bank.classes[5][0]),
            &rotate90(&[8., 9., 10., 11.], shape, 1)[..]
        );
        let plain = Bank::build(&tensors, &classes, &[0, 1, 0], false, shape);
        assert_eq!(plain.groups, [0, 1, 0]);
    }
}

//! Error types of the core.

/// Errors of the distance, prototype and classification functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CoreError {
    /// No embeddings were given where at least one is needed.
    #[error("no embeddings given")]
    Empty,
    /// An embedding has the wrong number of values.
    #[error("embedding has {found} values, expected {expected}")]
    DimMismatch {
        /// The embedding size that was expected.
        expected: usize,
        /// The size that was given.
        found: usize,
    },
    /// An embedding or distance is NaN or infinite.
    #[error("embedding or distance is not finite")]
    NonFinite,
    /// A class label is not below the number of classes.
    #[error("label {label} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The label given.
        label: usize,
        /// The number of classes.
        classes: usize,
    },
}

/// Errors of [`crate::Gallery`] operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GalleryError {
    /// The gallery already holds its capacity of identities.
    #[error("gallery is full ({capacity} identities)")]
    Full {
        /// The gallery's capacity.
        capacity: usize,
    },
    /// The name is longer than [`crate::NAME_CAP`] bytes.
    #[error("name is {found} bytes, at most {max} allowed")]
    NameTooLong {
        /// Longest name allowed, in bytes.
        max: usize,
        /// Length of the name given.
        found: usize,
    },
    /// No identity has this id.
    #[error("no identity with id {0}")]
    UnknownId(u32),
    /// All 2^32 ids have been handed out.
    #[error("identity ids are exhausted")]
    IdsExhausted,
    /// The embedding was unusable.
    #[error("bad embedding: {0}")]
    Embedding(#[from] CoreError),
}

/// Errors of encoding and decoding the stored form of a gallery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreError {
    /// The bytes end before the header or the records they announce.
    #[error("stored gallery is {found} bytes, expected {expected}")]
    Length {
        /// Bytes the header announces (or the header's own size).
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// The bytes do not start with the gallery magic `FSGL`.
    #[error("not a stored gallery (bad magic)")]
    BadMagic,
    /// The format version is not one this code reads.
    #[error("stored gallery format version {0} is not supported (expected 1)")]
    UnsupportedVersion(u16),
    /// The stored embedding size differs from the gallery's.
    #[error("stored gallery has {found}-d embeddings, expected {expected}")]
    DimMismatch {
        /// The gallery type's embedding size.
        expected: usize,
        /// The stored embedding size.
        found: usize,
    },
    /// More records are stored than the gallery can hold.
    #[error("stored gallery has {count} identities, capacity is {capacity}")]
    TooMany {
        /// Records stored.
        count: usize,
        /// The gallery type's capacity.
        capacity: usize,
    },
    /// The checksum does not match: the bytes are corrupt.
    #[error("stored gallery checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// CRC-32 found in the bytes.
        stored: u32,
        /// CRC-32 computed over the bytes.
        computed: u32,
    },
    /// A record passed the checksum but its contents are invalid.
    #[error("stored gallery record {record} is invalid: {what}")]
    BadRecord {
        /// Index of the record.
        record: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The output buffer is too small for the encoded gallery.
    #[error("output buffer is {found} bytes, {needed} needed")]
    BufferTooSmall {
        /// Bytes the encoding needs.
        needed: usize,
        /// Bytes available.
        found: usize,
    },
}

/// Errors of preprocessing a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PreprocessError {
    /// The frame has no pixels.
    #[error("frame is empty")]
    EmptyFrame,
    /// The pixel buffer does not match the frame's size and format.
    #[error("frame buffer has {found} bytes, expected {expected}")]
    FrameSize {
        /// Bytes the size and format call for.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// The output buffer does not match the recipe.
    #[error("output buffer has {found} values, expected {expected}")]
    OutputSize {
        /// Values the recipe produces.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The recipe itself is invalid.
    #[error("bad preprocessing recipe: {0}")]
    BadRecipe(&'static str),
    /// The recipe aligns faces and no landmarks were given.
    #[error("the recipe aligns faces: it needs the face's five landmarks (a face detector)")]
    NeedsLandmarks,
    /// The landmarks are not finite, or all in one place.
    #[error("face landmarks are not finite or all coincide")]
    BadLandmarks,
}

/// Errors of decoding a face detector's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DetectError {
    /// The input size is not a multiple of a stride.
    #[error("stride {stride} does not divide the detector input {width}x{height}")]
    Stride {
        /// The stride.
        stride: usize,
        /// Input width.
        width: usize,
        /// Input height.
        height: usize,
    },
    /// An output tensor has the wrong number of values.
    #[error("detector output {output}_{stride} has {found} values, expected {expected}")]
    OutputSize {
        /// Which output (`cls`, `obj`, `bbox`, `kps`).
        output: &'static str,
        /// Its stride.
        stride: usize,
        /// Values the input size calls for.
        expected: usize,
        /// Values given.
        found: usize,
    },
}

/// Errors of decoding a model blob ([`crate::engine::blob`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BlobError {
    /// The bytes are shorter than a header, or not the length the header states.
    #[error("model blob is {found} bytes, expected {expected}")]
    Length {
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// The bytes do not start with the blob magic.
    #[error("not a model blob of this version (bad magic; expected FSMCU, version 3)")]
    BadMagic,
    /// The checksum does not match the bytes.
    #[error(
        "model blob checksum {stored:#010x} does not match its bytes ({computed:#010x}): corrupted"
    )]
    Checksum {
        /// The stored CRC-32.
        stored: u32,
        /// The CRC-32 of the bytes.
        computed: u32,
    },
    /// A field runs past the end of the blob.
    #[error("model blob ends inside its {field}")]
    Truncated {
        /// The field.
        field: &'static str,
    },
    /// A field holds a value the engine cannot use.
    #[error("model blob's {field}: expected {expected}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

/// Errors of running the int8 engine ([`crate::engine::Model`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EngineError {
    /// The input is not the recipe's size.
    #[error("engine input has {found} values, expected {expected}")]
    InputLen {
        /// The recipe's `channels × height × width`.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The output buffer is not the embedding size.
    #[error("engine output has room for {found} values, expected {expected}")]
    OutputLen {
        /// The embedding size.
        expected: usize,
        /// Room given.
        found: usize,
    },
    /// The arena is smaller than the model states.
    #[error("engine arena too small: the model needs {bytes} bytes and {words} accumulator words")]
    ArenaTooSmall {
        /// Activation bytes needed.
        bytes: usize,
        /// i32 accumulators needed.
        words: usize,
    },
}

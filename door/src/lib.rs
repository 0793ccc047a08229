//! The door loop without the standard library: a camera frame in, the lock
//! relay pulsed or not.
//!
//! [`door::Door`] is generic over embedded-hal 1.0 pins and this crate's
//! small traits for time ([`clock`]), frames ([`camera`]), the encoder
//! ([`door::Encoder`]), gallery bytes ([`storage`]) and logs ([`events`]).
//! It needs an allocator (`alloc`): the gallery, enrollment shots and event
//! texts live on the heap. The Linux door (`fewshot-firmware`, tract's
//! encoder) and the Cortex-M4F door (`mcu/`, the core's int8 engine through
//! [`engine::EngineEncoder`]) run this same loop.
#![no_std]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod admin;
pub mod button;
pub mod camera;
pub mod clock;
pub mod door;
pub mod engine;
pub mod events;
pub mod pins;
pub mod sight;
pub mod sim;
pub mod storage;

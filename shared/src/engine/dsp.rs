//! The convolution's two-input-channel pass with the Cortex-M4/M7 DSP
//! extension (feature `dsp`, 32-bit ARM): `SMLAD` adds two 16-bit products
//! to an accumulator in one instruction, four output channels per step.
//!
//! Two weight rows (input channels `c0`, `c1`; output channels inner) are
//! read four bytes at a time; `PKHBT`/`PKHTB` (plain shifts and masks, which
//! the compiler turns into them) make `[c0·o, c0·o+1, c1·o, c1·o+1]`, and
//! `SXTB16` (with and without an 8-bit rotation) the sign-extended pairs
//! `(c0·o, c1·o)` and `(c0·o+1, c1·o+1)`, which `SMLAD` multiplies by the
//! packed activation pair `(v0, v1)`. Elsewhere (the host's tests) the two
//! instructions are emulated, so the packing is tested everywhere and the
//! instructions under qemu against the host's results.

/// `acc[o] += v0 · r0[o] + v1 · r1[o]` over int8 rows (as bytes), for
/// activations less their zero point (`v0`, `v1` in -255..=255).
pub fn pair(acc: &mut [i32], v0: i32, v1: i32, r0: &[u8], r1: &[u8]) {
    let x = ((v1 as u32) << 16) | (v0 as u32 & 0xFFFF);
    let quads = acc.len() / 4;
    let (head, tail) = acc.split_at_mut(quads * 4);
    for ((a, w0), w1) in head
        .chunks_exact_mut(4)
        .zip(r0.chunks_exact(4))
        .zip(r1.chunks_exact(4))
    {
        let c0 = u32::from_le_bytes([w0[0], w0[1], w0[2], w0[3]]);
        let c1 = u32::from_le_bytes([w1[0], w1[1], w1[2], w1[3]]);
        let lo = (c0 & 0xFFFF) | (c1 << 16);
        let hi = (c0 >> 16) | (c1 & 0xFFFF_0000);
        a[0] = smlad(x, sxtb16(lo), a[0]);
        a[1] = smlad(x, sxtb16_ror8(lo), a[1]);
        a[2] = smlad(x, sxtb16(hi), a[2]);
        a[3] = smlad(x, sxtb16_ror8(hi), a[3]);
    }
    for ((a, &w0), &w1) in tail.iter_mut().zip(&r0[quads * 4..]).zip(&r1[quads * 4..]) {
        *a += v0 * i32::from(w0 as i8) + v1 * i32::from(w1 as i8);
    }
}

#[cfg(all(target_arch = "arm", feature = "dsp"))]
#[allow(unsafe_code)]
mod isa {
    use core::arch::asm;

    /// `SXTB16`: bytes 0 and 2 sign-extended into the two halfwords.
    #[inline(always)]
    pub fn sxtb16(x: u32) -> u32 {
        let r: u32;
        // SAFETY: a register-only instruction of the DSP extension.
        unsafe {
            asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
        };
        r
    }

    /// `SXTB16` of `x` rotated right by 8: bytes 1 and 3.
    #[inline(always)]
    pub fn sxtb16_ror8(x: u32) -> u32 {
        let r: u32;
        // SAFETY: as above.
        unsafe {
            asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
        };
        r
    }

    /// `SMLAD`: `acc + lo(x)·lo(y) + hi(x)·hi(y)`, signed halfwords.
    #[inline(always)]
    pub fn smlad(x: u32, y: u32, acc: i32) -> i32 {
        let r: i32;
        // SAFETY: as above; it may set the Q flag, which nothing reads.
        unsafe {
            asm!("smlad {r}, {x}, {y}, {a}", r = lateout(reg) r, x = in(reg) x, y = in(reg) y, a = in(reg) acc, options(pure, nomem, nostack))
        };
        r
    }
}

#[cfg(not(all(target_arch = "arm", feature = "dsp")))]
mod isa {
    /// `SXTB16`, emulated.
    pub fn sxtb16(x: u32) -> u32 {
        let lo = (x as u8 as i8 as i16) as u16 as u32;
        let hi = ((x >> 16) as u8 as i8 as i16) as u16 as u32;
        lo | (hi << 16)
    }

    /// `SXTB16` with `ROR #8`, emulated.
    pub fn sxtb16_ror8(x: u32) -> u32 {
        sxtb16(x.rotate_right(8))
    }

    /// `SMLAD`, emulated.
    pub fn smlad(x: u32, y: u32, acc: i32) -> i32 {
        let half = |v: u32, shift: u32| i32::from((v >> shift) as u16 as i16);
        acc.wrapping_add(half(x, 0) * half(y, 0))
            .wrapping_add(half(x, 16) * half(y, 16))
    }
}

use isa::{smlad, sxtb16, sxtb16_ror8};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packed_pass_is_the_plain_one() {
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed >> 8
        };
        for cout in [1usize, 3, 4, 7, 64] {
            for _ in 0..50 {
                let r0: [u8; 64] = core::array::from_fn(|_| next() as u8);
                let r1: [u8; 64] = core::array::from_fn(|_| next() as u8);
                let (v0, v1) = ((next() % 511) as i32 - 255, (next() % 511) as i32 - 255);
                let start: [i32; 64] = core::array::from_fn(|_| (next() % 100_000) as i32 - 50_000);
                let mut got = start;
                pair(&mut got[..cout], v0, v1, &r0[..cout], &r1[..cout]);
                for o in 0..cout {
                    let want = i64::from(start[o])
                        + i64::from(v0) * i64::from(r0[o] as i8)
                        + i64::from(v1) * i64::from(r1[o] as i8);
                    assert_eq!(i64::from(got[o]), want, "cout {cout} o {o}");
                }
            }
        }
        // The extremes: -255 and 255 against -128 and 127.
        let mut acc = [0i32; 4];
        pair(
            &mut acc,
            -255,
            255,
            &[0x80, 0x7F, 0x80, 0x7F],
            &[0x7F, 0x80, 0x80, 0x7F],
        );
        assert_eq!(
            acc,
            [
                -255 * -128 + 255 * 127,
                -255 * 127 + 255 * -128,
                -255 * -128 + 255 * -128,
                -255 * 127 + 255 * 127
            ]
        );
    }
}

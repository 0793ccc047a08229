//! What both firmware binaries need: the instruction clock (SysTick in
//! virtual time), and failing loudly (a message, then a failing exit).

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use cortex_m_semihosting::{debug, hprintln};

/// SysTick wraps (every 2^24 ticks).
static WRAPS: AtomicU32 = AtomicU32::new(0);
/// qemu's mps2 system clock: 25 MHz, so a tick is 40 ns of virtual time, and
/// under `-icount shift=0` (1 ns per instruction) 40 instructions.
const NS_PER_TICK: u64 = 40;

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Starts SysTick on the core clock, wrapping every 2^24 ticks.
pub fn start_clock() {
    let mut core = cortex_m::Peripherals::take().unwrap_or_else(|| fail(&"peripherals taken"));
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(0x00FF_FFFF);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();
}

/// Virtual nanoseconds since [`start_clock`] (instructions under
/// `-icount shift=0`).
pub fn now_ns() -> u64 {
    loop {
        let before = WRAPS.load(Ordering::Acquire);
        let current = cortex_m::peripheral::SYST::get_current();
        if WRAPS.load(Ordering::Acquire) == before {
            let ticks = u64::from(before) << 24 | u64::from(0x00FF_FFFF - current);
            return ticks * NS_PER_TICK;
        }
    }
}

/// Prints the RAM used (`ram static=… stack_peak=… total=… heap_region=…
/// heap_peak=… used=…`: statics with the whole heap region plus the stack's
/// peak, and statics less the region plus the heap's and the stack's peaks),
/// then `done`, and exits qemu with success.
pub fn finish() -> ! {
    let (used, bss) = (crate::stack::used(), crate::stack::static_ram());
    let heap = crate::heap::peak();
    hprintln!(
        "ram static={} stack_peak={} total={} heap_region={} heap_peak={} used={}",
        bss,
        used,
        bss + used,
        crate::heap::HEAP_BYTES,
        heap,
        bss - crate::heap::HEAP_BYTES + heap + used
    );
    hprintln!("done");
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        cortex_m::asm::wfi();
    }
}

/// Prints `error …` and exits qemu with a failure.
pub fn fail(what: &dyn core::fmt::Display) -> ! {
    hprintln!("error {}", what);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(info)
}

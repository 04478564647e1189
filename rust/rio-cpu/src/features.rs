//! Run-time CPU feature detection. Nothing is assumed at compile time, so one build runs on any
//! x86-64 (and on other architectures through the scalar path).
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// Instruction-set levels, weakest first. Kernels pick the best level not above [`active_isa`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no explicit SIMD.
    Scalar = 0,
    /// AVX2 + FMA + F16C.
    Avx2 = 1,
    /// AVX-512 F/BW/VL.
    Avx512 = 2,
    /// AVX-512 with the BF16 dot-product instruction (`vdpbf16ps`).
    Avx512Bf16 = 3,
    /// AMX tiles with BF16 (`tdpbf16ps`), granted by the OS.
    Amx = 4,
}

impl Isa {
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16, Isa::Amx];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512_bf16",
            Isa::Amx => "amx_bf16",
        }
    }

    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s.to_ascii_lowercase())
    }
}

/// What the CPU and OS offer.
#[derive(Clone, Debug, Default)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512bf16: bool,
    pub avx512fp16: bool,
    /// AMX-TILE and AMX-BF16 in CPUID *and* tile data permission granted by the kernel.
    pub amx_bf16: bool,
}

impl CpuFeatures {
    /// The strongest level this machine supports.
    pub fn best_isa(&self) -> Isa {
        let avx2 = self.avx2 && self.fma && self.f16c;
        let avx512 = avx2 && self.avx512f && self.avx512bw && self.avx512vl;
        if avx512 && self.avx512bf16 && self.amx_bf16 {
            Isa::Amx
        } else if avx512 && self.avx512bf16 {
            Isa::Avx512Bf16
        } else if avx512 {
            Isa::Avx512
        } else if avx2 {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    }

    /// Names of the features present, for `rio_rt.cpu_features()`.
    pub fn names(&self) -> Vec<&'static str> {
        let all = [
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("f16c", self.f16c),
            ("avx512f", self.avx512f),
            ("avx512bw", self.avx512bw),
            ("avx512vl", self.avx512vl),
            ("avx512_bf16", self.avx512bf16),
            ("avx512_fp16", self.avx512fp16),
            ("amx_bf16", self.amx_bf16),
        ];
        all.into_iter().filter(|(_, on)| *on).map(|(n, _)| n).collect()
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuFeatures {
    CpuFeatures {
        avx2: is_x86_feature_detected!("avx2"),
        fma: is_x86_feature_detected!("fma"),
        f16c: is_x86_feature_detected!("f16c"),
        avx512f: is_x86_feature_detected!("avx512f"),
        avx512bw: is_x86_feature_detected!("avx512bw"),
        avx512vl: is_x86_feature_detected!("avx512vl"),
        avx512bf16: is_x86_feature_detected!("avx512bf16"),
        avx512fp16: is_x86_feature_detected!("avx512fp16"),
        amx_bf16: amx::cpu_has_amx_bf16() && amx::request_tile_permission(),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> CpuFeatures {
    CpuFeatures::default()
}

#[cfg(target_arch = "x86_64")]
mod amx {
    /// CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    pub fn cpu_has_amx_bf16() -> bool {
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        (leaf7.edx >> 22) & 1 == 1 && (leaf7.edx >> 24) & 1 == 1
    }

    /// Linux hands out AMX tile state only on request: arch_prctl(ARCH_REQ_XCOMP_PERM,
    /// XFEATURE_XTILEDATA). The permission is per process; asking twice is harmless.
    #[cfg(target_os = "linux")]
    pub fn request_tile_permission() -> bool {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: a plain syscall with integer arguments; it touches no memory of ours.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }

    #[cfg(not(target_os = "linux"))]
    pub fn request_tile_permission() -> bool {
        false
    }
}

/// The features of this machine, detected on first use.
pub fn detected() -> &'static CpuFeatures {
    static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
    FEATURES.get_or_init(detect)
}

/// 255: no cap set yet (read `RIO_RT_MAX_ISA` on first use).
static CAP: AtomicU8 = AtomicU8::new(u8::MAX);

/// Caps the instruction set the kernels use (for tests and benchmarks of the slower paths).
/// Returns the level now active: the cap, or the machine's best if that is lower.
pub fn set_max_isa(cap: Isa) -> Isa {
    CAP.store(cap as u8, Ordering::Relaxed);
    active_isa()
}

/// The level kernels use now: the machine's best, lowered by [`set_max_isa`] or the
/// `RIO_RT_MAX_ISA` environment variable (`scalar`, `avx2`, `avx512`, `avx512_bf16`, `amx_bf16`).
pub fn active_isa() -> Isa {
    let best = detected().best_isa();
    let mut cap = CAP.load(Ordering::Relaxed);
    if cap == u8::MAX {
        let from_env = std::env::var("RIO_RT_MAX_ISA").ok().and_then(|s| Isa::parse(&s)).unwrap_or(Isa::Amx);
        cap = from_env as u8;
        CAP.store(cap, Ordering::Relaxed);
    }
    Isa::ALL.into_iter().filter(|&i| i as u8 <= cap && i <= best).max().unwrap_or(Isa::Scalar)
}

/// The levels this machine can run, weakest first (every kernel test sweeps them all).
pub fn available_isas() -> Vec<Isa> {
    let best = detected().best_isa();
    Isa::ALL.into_iter().filter(|&i| i <= best).collect()
}

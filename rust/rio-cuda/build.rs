//! Compiles `kernels/*.cu` with nvcc into PTX (compute_80, compute_90) and cubins (sm_80, sm_90)
//! and embeds them (`$OUT_DIR/kernels.rs`). nvcc: `$RIO_RT_NVCC`, else `nvcc` on PATH, else the
//! PyPI toolchain of scripts/install_cuda_toolchain.sh in `.venv/cuda-13.0`. Without nvcc the crate
//! builds with no kernels and says why at run time (`rio_cuda::probe()`); a failing compile is a
//! build error. The flags match scripts/compile_kernels.sh.
use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const ARCHS: [u32; 2] = [80, 90];

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    if let Some(p) = env::var_os("RIO_RT_NVCC") {
        return Some(PathBuf::from(p));
    }
    if let Some(paths) = env::var_os("PATH") {
        for dir in env::split_paths(&paths) {
            let p = dir.join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let venv = env::var_os("RIO_RT_VENV").map(PathBuf::from).unwrap_or_else(|| root.join(".venv"));
    let p = venv.join("cuda-13.0/nvidia/cu13/bin/nvcc");
    p.is_file().then_some(p)
}

fn run(nvcc: &Path, args: &[&str], what: &str) {
    let out = Command::new(nvcc).args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.to_lowercase().contains("warning") {
        panic!("nvcc failed on {what}:\n{stderr}{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../..").canonicalize().unwrap();
    let kernels = root.join("kernels");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=RIO_RT_NVCC");
    println!("cargo:rerun-if-env-changed=RIO_RT_VENV");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-changed={}", kernels.display());

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "cu" || x == "cuh")).collect())
        .unwrap_or_default();
    sources.sort();
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
    }

    let mut code = String::new();
    let Some(nvcc) = find_nvcc(&root) else {
        code.push_str("pub const NVCC: Option<&str> = None;\npub const MODULES: &[KernelModule] = &[];\n");
        code.push_str(
            "pub const BUILD_NOTE: &str = \"built without kernels: nvcc was not found at build time (set RIO_RT_NVCC, put nvcc on PATH, or run scripts/install_cuda_toolchain.sh .venv) \";\n",
        );
        std::fs::write(out_dir.join("kernels.rs"), code).unwrap();
        println!("cargo:warning=rio-cuda: nvcc not found, building without CUDA kernels");
        return;
    };
    println!("cargo:rerun-if-changed={}", nvcc.display());
    let version = Command::new(&nvcc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().lines().last().unwrap_or("").to_string());
    let version = version.unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));

    let include = format!("-I{}", kernels.display());
    let flags = ["-std=c++17", "-O3", "-lineinfo", "-Werror", "all-warnings", include.as_str()];
    let mut modules = String::new();
    for src in sources.iter().filter(|p| p.extension().is_some_and(|x| x == "cu")) {
        let name = src.file_stem().unwrap().to_string_lossy().to_string();
        let src_str = src.to_string_lossy().to_string();
        let mut fields = format!("KernelModule {{ name: {name:?}");
        for arch in ARCHS {
            let ptx = out_dir.join(format!("{name}.compute_{arch}.ptx"));
            let cubin = out_dir.join(format!("{name}.sm_{arch}.cubin"));
            let (ptx_s, cubin_s) = (ptx.to_string_lossy().to_string(), cubin.to_string_lossy().to_string());
            let arch_ptx = format!("-arch=compute_{arch}");
            let arch_sm = format!("-arch=sm_{arch}");
            let mut args: Vec<&str> = flags.to_vec();
            args.extend([arch_ptx.as_str(), "-ptx", "-o", &ptx_s, &src_str]);
            run(&nvcc, &args, &format!("{name}.cu (compute_{arch})"));
            let mut args: Vec<&str> = flags.to_vec();
            args.extend([arch_sm.as_str(), "-cubin", "-o", &cubin_s, &src_str]);
            run(&nvcc, &args, &format!("{name}.cu (sm_{arch})"));
            // PTX is loaded as a C string: include_str! plus the NUL the driver needs.
            write!(fields, ", ptx_{arch}: concat!(include_str!({ptx_s:?}), \"\\0\"), cubin_{arch}: include_bytes!({cubin_s:?})").unwrap();
        }
        fields.push_str(" },\n");
        modules.push_str(&fields);
    }
    writeln!(code, "pub const NVCC: Option<&str> = Some({:?});", format!("{} ({})", nvcc.display(), version)).unwrap();
    writeln!(code, "pub const MODULES: &[KernelModule] = &[\n{modules}];").unwrap();
    code.push_str("pub const BUILD_NOTE: &str = \"\";\n");
    std::fs::write(out_dir.join("kernels.rs"), code).unwrap();
}

//! The model registry shared by the embedding and causal-LM functions.
//!
//! A model is addressed by **name**, never by path: a sub-folder of `xsell.model_dir` in
//! Hugging Face layout (`config.json`, `tokenizer.json`, `*.safetensors`) or a `.gguf` file
//! there (named with or without the `.gguf` suffix). Names with `/`, `\`, `..` or a leading
//! `.` are refused, so no function reads a file outside the model folder, and only a
//! superuser can point `xsell.model_dir` elsewhere.
//!
//! Loaded models are cached per backend (loading is lazy, on first use, never in
//! `_PG_init`). Every use compares the files' size, modification time and inode with those
//! seen at load time, so replacing a model file is noticed without a reconnect.

use crate::common::{Code, raise, raise_detail};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a model is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A sentence-embedding (BERT-family) folder.
    Embedding,
    /// A causal language model (GGUF file or llama / GPT-2 folder).
    CausalLm,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Embedding => "embedding",
            Kind::CausalLm => "causal_lm",
        }
    }
}

/// A model name resolved to its file or folder.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
}

/// The folder models are read from: `xsell.model_dir`, or when that is empty the folder
/// `make install` fills, `$(pg_config --sharedir)/extension/pg_xsell/models`.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = crate::guc::MODEL_DIR.get()
        && !dir.as_bytes().is_empty()
    {
        return PathBuf::from(dir.to_string_lossy().into_owned());
    }
    default_model_dir()
}

/// `$sharedir/extension/pg_xsell/models` of the running server.
pub fn default_model_dir() -> PathBuf {
    let mut buf = vec![0 as std::ffi::c_char; pg_sys::MAXPGPATH as usize];
    // SAFETY: my_exec_path is the server's NUL-terminated executable path; get_share_path
    // writes at most MAXPGPATH bytes into buf.
    let share = unsafe {
        pg_sys::get_share_path(std::ptr::addr_of!(pg_sys::my_exec_path).cast(), buf.as_mut_ptr());
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    };
    PathBuf::from(share).join("extension/pg_xsell/models")
}

/// Refuses anything that is not a plain name.
pub fn check_name(name: &str) {
    if name.is_empty() || name.len() > 255 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "a model name must have 1 to 255 characters");
    }
    if name.contains('/') || name.contains('\\') || name.contains("..") || name.starts_with('.') || name.contains('\0')
    {
        raise_detail(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("invalid model name \"{name}\": a model name is a name, not a path"),
            "Models are read only from the folder set by xsell.model_dir; list them with SELECT * FROM xsell.models().",
        );
    }
}

fn is_gguf_file(p: &Path) -> bool {
    p.is_file() && p.extension().is_some_and(|e| e == "gguf")
}

/// What a Hugging Face folder holds: an embedding model when it is a sentence-transformers
/// folder or a BERT config, else a causal LM.
fn folder_kind(dir: &Path) -> Option<Kind> {
    let cfg = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&cfg).ok()?;
    let model_type = v.get("model_type").and_then(|t| t.as_str()).unwrap_or("");
    if model_type == "bert" || dir.join("modules.json").is_file() || dir.join("1_Pooling").is_dir() {
        Some(Kind::Embedding)
    } else {
        Some(Kind::CausalLm)
    }
}

/// The models in a folder (folders with config.json; .gguf files, named without the
/// suffix), sorted by name.
fn installed(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let file = e.file_name().to_string_lossy().into_owned();
                    let path = e.path();
                    if file.starts_with('.') {
                        None
                    } else if path.is_dir() && path.join("config.json").is_file() {
                        Some((file, path))
                    } else if is_gguf_file(&path) {
                        Some((file.trim_end_matches(".gguf").to_string(), path))
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Resolves a name in the model folder; ERROR 42704 when nothing of that name is installed.
pub fn resolve(name: &str) -> Resolved {
    check_name(name);
    let dir = model_dir();
    let direct = dir.join(name);
    let found = if direct.is_dir() {
        folder_kind(&direct).map(|k| (direct, k))
    } else if is_gguf_file(&direct) {
        Some((direct, Kind::CausalLm))
    } else {
        let g = dir.join(format!("{name}.gguf"));
        is_gguf_file(&g).then_some((g, Kind::CausalLm))
    };
    match found {
        Some((path, kind)) => Resolved { name: name.to_string(), path, kind },
        None => {
            let installed: Vec<String> = installed(&dir).into_iter().map(|(n, _)| n).collect();
            raise_detail(
                Code::ERRCODE_UNDEFINED_OBJECT,
                format!("model \"{name}\" is not installed"),
                format!(
                    "Installed in {} (xsell.model_dir): {}.",
                    dir.display(),
                    if installed.is_empty() { "none".to_string() } else { installed.join(", ") }
                ),
            )
        }
    }
}

/// Resolves a name and checks that it is a model of the wanted kind.
pub fn resolve_kind(name: &str, kind: Kind) -> Resolved {
    let r = resolve(name);
    if r.kind != kind {
        raise(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!("model \"{name}\" is of kind {}, not {}", r.kind.name(), kind.name()),
        );
    }
    r
}

/// Identity of the files a model was loaded from (size, mtime, inode per file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature(Vec<(PathBuf, u64, i64, i64, u64)>);

/// The signature of a model file, or of every regular file in a model folder (and its
/// pooling sub-folder).
pub fn signature(path: &Path) -> Signature {
    let mut out = Vec::new();
    let mut add = |p: PathBuf| {
        if let Ok(m) = std::fs::metadata(&p)
            && m.is_file()
        {
            out.push((p, m.size(), m.mtime(), m.mtime_nsec(), m.ino()));
        }
    };
    if path.is_dir() {
        for sub in [path.to_path_buf(), path.join("1_Pooling")] {
            if let Ok(rd) = std::fs::read_dir(&sub) {
                for e in rd.flatten() {
                    add(e.path());
                }
            }
        }
    } else {
        add(path.to_path_buf());
    }
    out.sort();
    Signature(out)
}

struct Cached<T> {
    path: PathBuf,
    sig: Signature,
    generation: u64,
    model: Arc<T>,
}

/// A per-backend cache of loaded models of one type, keyed by name and load options.
pub struct ModelCache<T> {
    entries: HashMap<String, Cached<T>>,
    generation: u64,
}

impl<T> Default for ModelCache<T> {
    fn default() -> Self {
        ModelCache { entries: HashMap::new(), generation: 0 }
    }
}

/// A model taken from the cache, with a number that changes whenever it is (re)loaded
/// (for caches of derived values, such as label embeddings).
pub struct Loaded<T> {
    pub model: Arc<T>,
    pub generation: u64,
}

impl<T> ModelCache<T> {
    /// The cached model when its files are unchanged, else `load(path)` (which raises on
    /// failure).
    pub fn get(&mut self, key: &str, r: &Resolved, load: impl FnOnce(&Path) -> T) -> Loaded<T> {
        let sig = signature(&r.path);
        if let Some(c) = self.entries.get(key)
            && c.path == r.path
            && c.sig == sig
        {
            return Loaded { model: c.model.clone(), generation: c.generation };
        }
        // Drop the stale copy first: two copies of a large model at once are not needed.
        self.entries.remove(key);
        crate::common::check_interrupts();
        let started = std::time::Instant::now();
        let model = Arc::new(load(&r.path));
        crate::common::progress(|| {
            format!("loaded model \"{}\" from {} in {:.2} s", r.name, r.path.display(), started.elapsed().as_secs_f64())
        });
        self.generation += 1;
        let generation = self.generation;
        self.entries.insert(
            key.to_string(),
            Cached { path: r.path.clone(), sig, generation, model: model.clone() },
        );
        Loaded { model, generation }
    }
}

/// Runs `f` with a thread-local cache.
pub fn with_cache<T: 'static, R>(
    cache: &'static std::thread::LocalKey<RefCell<ModelCache<T>>>,
    f: impl FnOnce(&mut ModelCache<T>) -> R,
) -> R {
    cache.with(|c| f(&mut c.borrow_mut()))
}

/// `xsell.models()`: the installed models.
#[pg_extern(stable, parallel_safe)]
fn models() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(kind, String),
        name!(format, String),
        name!(parameters, Option<i64>),
        name!(dims, Option<i32>),
        name!(max_tokens, Option<i32>),
    ),
> {
    let dir = model_dir();
    if let Err(e) = std::fs::read_dir(&dir) {
        raise_detail(
            Code::ERRCODE_UNDEFINED_FILE,
            format!("cannot read the model folder {}: {e}", dir.display()),
            "make install provisions the models; a superuser can set xsell.model_dir.",
        );
    }
    let names = installed(&dir);
    let mut rows = Vec::new();
    for (name, path) in names {
        let kind = if path.is_dir() { folder_kind(&path) } else { Some(Kind::CausalLm) };
        let row = match kind {
            Some(Kind::Embedding) => xsell_embed::probe(&path).map(|i| {
                ("embedding", i.format.to_string(), Some(i.parameters as i64), Some(i.dims as i32), Some(i.max_tokens as i32))
            }).map_err(|e| e.to_string()),
            Some(Kind::CausalLm) => xsell_causal::CausalLm::probe(&path)
                .map(|i| ("causal_lm", i.format, Some(i.parameters as i64), None, Some(i.context_length as i32)))
                .map_err(|e| e.to_string()),
            None => Err("unreadable config.json".to_string()),
        };
        match row {
            Ok((kind, format, params, dims, max_tokens)) => {
                rows.push((name, kind.to_string(), format, params, dims, max_tokens))
            }
            Err(e) => pgrx::warning!("skipping model \"{name}\": {e}"),
        }
    }
    TableIterator::new(rows)
}

extension_sql_file!(
    "../../sql/models.sql",
    name = "comment_models",
    requires = [models]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use std::path::PathBuf;

    /// A private model folder (written by the backend, as the server's OS user) holding a
    /// GGUF file cut after its header and a MiniLM folder whose weights are cut in half.
    fn corrupt_model_dir(tag: &str) -> PathBuf {
        let dir = PathBuf::from(format!("/tmp/pg_xsell-corrupt-models-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("broken-minilm/1_Pooling")).unwrap();
        std::fs::write(dir.join("truncated.gguf"), b"GGUF\x03\x00\x00\x00\x05\x00").unwrap();
        let real = super::default_model_dir().join("all-MiniLM-L6-v2");
        for f in ["config.json", "tokenizer.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"] {
            std::fs::copy(real.join(f), dir.join("broken-minilm").join(f)).unwrap();
        }
        let w = std::fs::read(real.join("model.safetensors")).unwrap();
        std::fs::write(dir.join("broken-minilm/model.safetensors"), &w[..w.len() / 2]).unwrap();
        Spi::run(&format!("SET xsell.model_dir = '{}'", dir.display())).unwrap();
        dir
    }

    #[pg_test]
    fn models_lists_both_kinds() {
        let e = Spi::get_one::<String>(
            "SELECT string_agg(name, ', ' ORDER BY name) FROM xsell.models()",
        )
        .unwrap()
        .unwrap();
        assert!(e.contains("all-MiniLM-L6-v2") && e.contains("SmolLM2-135M-Instruct.Q4_1"), "{e}");
    }

    #[pg_test(error = "invalid or corrupt model: cannot parse the GGUF header: failed to fill whole buffer")]
    fn truncated_gguf_is_an_error() {
        corrupt_model_dir("gguf");
        Spi::run("SELECT xsell.lm_loglik('a', 'b', 'truncated')").unwrap();
    }

    #[pg_test(error = "corrupt model file /tmp/pg_xsell-corrupt-models-embed/broken-minilm/model.safetensors: tensor \"embeddings.word_embeddings.weight\": data_offsets [796672, 47678464] lie outside the 45422772-byte data section (truncated file?)")]
    fn truncated_safetensors_is_an_error() {
        corrupt_model_dir("embed");
        Spi::run("SELECT xsell.embed('a', 'broken-minilm')").unwrap();
    }

    /// A model loaded from a folder, whose weights file is then replaced, is loaded again
    /// (here: the replacement is corrupt, so the next call fails instead of serving the
    /// cached copy).
    #[pg_test(error = "corrupt model file /tmp/pg_xsell-corrupt-models-reload/good-minilm/model.safetensors: tensor \"embeddings.word_embeddings.weight\": data_offsets [796672, 47678464] lie outside the 45422772-byte data section (truncated file?)")]
    fn replaced_model_files_are_reloaded() {
        let dir = corrupt_model_dir("reload");
        let good = dir.join("good-minilm");
        std::fs::create_dir_all(good.join("1_Pooling")).unwrap();
        let real = super::default_model_dir().join("all-MiniLM-L6-v2");
        for f in ["config.json", "tokenizer.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "model.safetensors"] {
            std::fs::copy(real.join(f), good.join(f)).unwrap();
        }
        let v = Spi::get_one::<Vec<f32>>("SELECT xsell.embed('tent', 'good-minilm')").unwrap().unwrap();
        assert_eq!(v.len(), 384);
        // Replace the weights by a new file (rename over it, as an upgrade would).
        std::fs::copy(dir.join("broken-minilm/model.safetensors"), good.join("model.safetensors.new")).unwrap();
        std::fs::rename(good.join("model.safetensors.new"), good.join("model.safetensors")).unwrap();
        Spi::run("SELECT xsell.embed('tent', 'good-minilm')").unwrap();
    }
}

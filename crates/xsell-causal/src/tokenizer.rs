//! Tokenizers: Hugging Face `tokenizer.json`, or rebuilt faithfully from GGUF metadata,
//! plus special-token ids and the ChatML chat template.

use crate::error::{LmError, Result};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

/// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`) as used by SmolLM2, Qwen, ...
#[derive(Clone, Debug)]
pub(crate) struct ChatMl {
    pub im_start: u32,
    pub im_end: u32,
    /// System message the template inserts when the conversation has none.
    pub default_system: Option<String>,
}

impl ChatMl {
    /// Recognises a ChatML Jinja template (it must emit `<|im_start|>` + role, the
    /// `<|im_end|>` terminator and an assistant generation prompt), and extracts the
    /// default system message of templates that insert one when the first message is not
    /// a system message (SmolLM2: "You are a helpful AI assistant named SmolLM, ...").
    pub(crate) fn detect(template: &str, tok: &Tokenizer) -> Option<ChatMl> {
        if !(template.contains("<|im_start|>")
            && template.contains("<|im_end|>")
            && template.contains("add_generation_prompt")
            && template.contains("assistant"))
        {
            return None;
        }
        let im_start = tok.token_to_id("<|im_start|>")?;
        let im_end = tok.token_to_id("<|im_end|>")?;
        let mut default_system = None;
        if template.contains("!= 'system'") || template.contains("!= \"system\"") {
            for marker in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
                if let Some(i) = template.find(marker) {
                    let rest = &template[i + marker.len()..];
                    if let Some(j) = rest.find("<|im_end|>") {
                        let msg = rest[..j].replace("\\n", "\n");
                        // Only a literal message, not a Jinja expression.
                        if !msg.contains("{{") && !msg.contains('\'') && !msg.contains("{%") {
                            default_system = Some(msg);
                        }
                    }
                    break;
                }
            }
        }
        Some(ChatMl {
            im_start,
            im_end,
            default_system,
        })
    }
}

/// Tokenizer plus the special tokens the scoring and generation code needs.
pub(crate) struct Tok {
    /// Tokenizer used for texts (special-token strings in a text are recognised, as
    /// Hugging Face tokenizers do by default).
    pub inner: Tokenizer,
    /// Same tokenizer with special-token matching disabled: chat message contents are
    /// tokenized literally so that a user cannot inject `<|im_end|>`.
    pub literal: Tokenizer,
    /// Token every scored text is conditioned on (BOS, or EOS when there is no BOS, as the
    /// lm-evaluation-harness does).
    pub prefix_id: u32,
    /// End-of-sequence / end-of-turn ids that stop generation.
    pub eos: Vec<u32>,
    /// Whether the model expects BOS in front of a raw generation prompt.
    pub add_bos: bool,
    pub chat: Option<ChatMl>,
}

impl Tok {
    /// Assembles a tokenizer; `bos` falls back to the first EOS id as conditioning token.
    pub(crate) fn new(
        inner: Tokenizer,
        bos: Option<u32>,
        mut eos: Vec<u32>,
        add_bos: bool,
        template: Option<&str>,
    ) -> Result<Self> {
        let chat = template.and_then(|t| ChatMl::detect(t, &inner));
        if let Some(c) = &chat
            && !eos.contains(&c.im_end)
        {
            eos.push(c.im_end);
        }
        eos.dedup();
        let prefix_id = bos.or_else(|| eos.first().copied()).ok_or_else(|| {
            LmError::format("the tokenizer defines neither a BOS nor an EOS token to condition on")
        })?;
        let mut literal = inner.clone();
        literal.set_encode_special_tokens(true);
        Ok(Tok {
            inner,
            literal,
            prefix_id,
            eos,
            add_bos,
            chat,
        })
    }

    /// Token ids of `text`, without special tokens added.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>> {
        encode_with(&self.inner, text)
    }

    /// Token ids of `text` where special-token strings are plain text.
    pub(crate) fn encode_literal(&self, text: &str) -> Result<Vec<u32>> {
        encode_with(&self.literal, text)
    }

    /// Text of `ids`.
    pub(crate) fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| LmError::Tokenizer(e.to_string()))
    }
}

fn encode_with(t: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    t.encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| LmError::Tokenizer(e.to_string()))
}

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// Builds the Hugging Face tokenizer equivalent to a GGUF `gpt2` (byte-level BPE)
/// vocabulary: the same vocab and merges, the pre-tokenizer that llama.cpp selects with
/// `tokenizer.ggml.pre`, and control/user-defined tokens as added tokens.
///
/// Supported `pre` values: `smollm` (single digits, then GPT-2 byte-level without prefix
/// space: SmolLM/SmolLM2), and `gpt-2`/`gpt2`/`default` (GPT-2 byte-level).
pub(crate) fn from_gguf_vocab(
    tokens: &[String],
    types: Option<&[i64]>,
    merges: &[String],
    pre: Option<&str>,
) -> Result<Tokenizer> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre.unwrap_or("default") {
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level.clone()]}),
        "gpt-2" | "gpt2" | "default" => byte_level.clone(),
        other => {
            return Err(LmError::Unsupported(format!(
                "GGUF pre-tokenizer '{other}' (supported: smollm, gpt-2, default)"
            )));
        }
    };
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(json!(i));
        let ty = types.and_then(|ts| ts.get(i)).copied().unwrap_or(1);
        if ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED {
            added.push(
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == TOKEN_CONTROL}),
            );
        }
    }
    let mut merge_pairs = Vec::with_capacity(merges.len());
    for m in merges {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            LmError::format(format!(
                "GGUF merge '{m}' is not two space-separated tokens"
            ))
        })?;
        merge_pairs.push(json!([a, b]));
    }
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": Value::Object(vocab), "merges": merge_pairs}
    });
    let text = serde_json::to_string(&spec).map_err(|e| LmError::Tokenizer(e.to_string()))?;
    text.parse::<Tokenizer>()
        .map_err(|e| LmError::Tokenizer(format!("cannot build the GGUF tokenizer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Tokenizer {
        let mut tokens: Vec<String> = vec![
            "<|endoftext|>".into(),
            "<|im_start|>".into(),
            "<|im_end|>".into(),
        ];
        // byte-level alphabet subset
        for c in ["a", "b", "c", "Ġ", "1", "2", "Ċ", "ab", "Ġa", "Ġab"] {
            tokens.push(c.into());
        }
        let types: Vec<i64> = tokens
            .iter()
            .enumerate()
            .map(|(i, _)| if i < 3 { 3 } else { 1 })
            .collect();
        let merges = vec!["Ġ a".to_string(), "Ġa b".to_string(), "a b".to_string()];
        from_gguf_vocab(&tokens, Some(&types), &merges, Some("smollm")).unwrap()
    }

    #[test]
    fn gguf_vocab_builds_a_byte_level_bpe() {
        let t = toy();
        let ids = encode_with(&t, "ab ab12").unwrap();
        // "ab" | " ab" | "1" | "2"  (digits split one by one, no prefix space)
        assert_eq!(ids, vec![10, 12, 7, 8]);
        assert_eq!(t.decode(&ids, false).unwrap(), "ab ab12");
        // control tokens are recognised in text
        assert_eq!(encode_with(&t, "<|im_end|>a").unwrap(), vec![2, 3]);
        let bad = from_gguf_vocab(&["a".into()], None, &["ab".into()], None);
        assert!(matches!(bad, Err(LmError::ModelFormat(_))));
        let bad = from_gguf_vocab(&["a".into()], None, &[], Some("llama-bpe"));
        assert!(matches!(bad, Err(LmError::Unsupported(_))));
    }

    #[test]
    fn chatml_detection_and_literal_encoding() {
        let t = toy();
        let tpl = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe nice<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let c = ChatMl::detect(tpl, &t).unwrap();
        assert_eq!((c.im_start, c.im_end), (1, 2));
        assert_eq!(c.default_system.as_deref(), Some("Be nice"));
        let plain = tpl.replace("!= 'system'", "== 'x'");
        assert!(ChatMl::detect(&plain, &t).unwrap().default_system.is_none());
        assert!(ChatMl::detect("{{ bos_token }}{{ message }}", &t).is_none());
        let tok = Tok::new(t, None, vec![0], false, Some(tpl)).unwrap();
        assert_eq!(tok.prefix_id, 0);
        assert_eq!(tok.eos, vec![0, 2]);
        assert_ne!(tok.encode_literal("<|im_end|>").unwrap(), vec![2]);
        assert_eq!(tok.encode("<|im_end|>").unwrap(), vec![2]);
        assert!(tok.encode("").unwrap().is_empty());
        assert!(Tok::new(toy(), None, vec![], false, None).is_err());
    }
}

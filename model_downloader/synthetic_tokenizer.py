"""A made-up byte-level BPE tokenizer with exactly a preset's vocabulary size and special-token ids.

Random weights emit token ids spread over the whole vocabulary, so the vocabulary is mostly
pseudo-words built from syllables: the decoded output reads as gibberish words rather than bytes.
Every byte is a token, so any text (English prompts included) encodes and decodes losslessly.
"""

import random

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from .presets import ModelPreset

# TinyLlama/Zephyr-style: the role markers are plain text, only bos/eos are special tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# A few hundred frequent English words first, so prompts take a realistic number of tokens.
COMMON_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by"
    " word but not what all were we when your can said there use an each which she do how their if will up"
    " other about out many then them these so some her would make like him into time has look two more write"
    " go see number no way could people my than first water been call who oil its now find long down day did"
    " get come made may part over new sound take only little work know place year live me back give most very"
    " after thing our just name good sentence man think say great where help through much before line right"
    " too mean old any same tell boy follow came want show also around form three small set put end does"
    " another well large must big even such because turn here why ask went men read need land different home"
    " us move try kind hand picture again change off play spell air away animal house point page letter"
    " mother answer found study still learn should world high every near add food between own below country"
    " plant last school father keep tree never start city earth eye light thought head under story saw left"
    " once hello question model token layer worker network latency"
).split()

ONSETS = (
    "b c d f g h j k l m n p r s t v w y z"
    " bl br ch cl cr dr fl fr gl gr pl pr sc sh sk sl sp st str th tr wh"
).split()
VOWELS = "a e i o u a e i o e ea ou ai io".split()  # repeats make the common vowels commoner
CODAS = ["", "", "", "", "n", "r", "s", "l", "m", "t", "nd", "st", "ng", "rk", "ck", "nt", "x"]
MAX_WORD_LETTERS = 12  # longer pseudo-words look less like words


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, which the ByteLevel pre-tokenizer and decoder use."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + shifted)
            shifted += 1
    return mapping


SPACE = bytes_to_unicode()[ord(" ")]  # "Ġ": how a leading space looks inside byte-level tokens


def syllables(rng: random.Random) -> list[str]:
    """Every onset+vowel+coda syllable (plus bare vowels), in a seeded order."""
    found = {vowel + coda for vowel in VOWELS for coda in CODAS}
    found |= {onset + vowel + coda for onset in ONSETS for vowel in VOWELS for coda in CODAS}
    ordered = sorted(found)
    rng.shuffle(ordered)
    return ordered


def generate_merges(n_merges: int, seed: int) -> list[tuple[str, str]]:
    """Exactly `n_merges` BPE merges over the 256 byte tokens, each making a new, distinct token.

    Order: a space before each letter, common English words, syllables, then seeded pseudo-words
    made of a known word plus a syllable.
    """
    rng = random.Random(seed)
    byte_chars = bytes_to_unicode()
    known = set(byte_chars.values())
    merges: list[tuple[str, str]] = []

    def add(left: str, right: str) -> bool:
        """Records left+right as a token; False when it exists already or enough merges are made."""
        if len(merges) >= n_merges or left + right in known:
            return False
        known.add(left + right)
        merges.append((left, right))
        return True

    def add_chain(word: str) -> None:
        # Left-to-right merges build every prefix of `word`, so each merge's parts already exist.
        for end in range(2, len(word) + 1):
            add(word[: end - 1], word[end - 1])

    for letter in "etaoinshrdlcumwfgypbvkjxqz":
        add(SPACE, letter)
    for word in COMMON_WORDS:
        add_chain(SPACE + word)
        add_chain(word)
    pieces = syllables(rng)
    for piece in pieces:
        add_chain(piece)
        add_chain(SPACE + piece)

    words = [word for piece in pieces for word in (piece, SPACE + piece) if word in known]
    attempts = 0
    while len(merges) < n_merges:
        attempts += 1
        if attempts > 100 * n_merges + 100_000:
            raise RuntimeError(f"could not make {n_merges} distinct merges; only {len(merges)}")
        left = rng.choice(words)
        right = rng.choice(pieces)
        if right not in known or len((left + right).lstrip(SPACE)) > MAX_WORD_LETTERS:
            continue
        if add(left, right):
            words.append(left + right)
    return merges


def assign_ids(regular_tokens: list[str], special_tokens: dict[int, str], vocab_size: int) -> dict[str, int]:
    """Token -> id: specials at their fixed ids, the regular tokens fill every other id in order."""
    if len(regular_tokens) + len(special_tokens) != vocab_size:
        raise ValueError(
            f"{len(regular_tokens)} regular + {len(special_tokens)} special tokens != vocab size {vocab_size}"
        )
    vocab = {token: token_id for token_id, token in special_tokens.items()}
    regular = iter(regular_tokens)
    for token_id in range(vocab_size):
        if token_id not in special_tokens:
            vocab[next(regular)] = token_id
    return vocab


def special_tokens_of(preset: ModelPreset) -> dict[int, str]:
    if preset.bos_token_id == preset.eos_token_id:
        raise ValueError(f"preset {preset.name}: bos and eos share id {preset.bos_token_id}")
    for token_id in (preset.bos_token_id, preset.eos_token_id):
        if not 0 <= token_id < preset.vocab_size:
            raise ValueError(f"preset {preset.name}: special id {token_id} outside vocab of {preset.vocab_size}")
    return {preset.bos_token_id: preset.bos_token, preset.eos_token_id: preset.eos_token}


def build_backend_tokenizer(preset: ModelPreset, seed: int = 0) -> Tokenizer:
    """The `tokenizers.Tokenizer`: byte-level BPE, bos prepended on encode like Llama's."""
    specials = special_tokens_of(preset)
    byte_tokens = [bytes_to_unicode()[byte] for byte in range(256)]
    n_merges = preset.vocab_size - len(specials) - len(byte_tokens)
    if n_merges < 0:
        raise ValueError(f"preset {preset.name}: vocab of {preset.vocab_size} is smaller than the 256 bytes")
    merges = generate_merges(n_merges, seed)
    regular_tokens = byte_tokens + [left + right for left, right in merges]
    vocab = assign_ids(regular_tokens, specials, preset.vocab_size)

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    # The specials are already in the vocab at their ids, so registering them keeps those ids.
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials.values()])
    bos = preset.bos_token
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, preset.bos_token_id)],
    )
    return tokenizer


def build_tokenizer(preset: ModelPreset, seed: int = 0):
    """The synthetic tokenizer as a `transformers.PreTrainedTokenizerFast`, ready for save_pretrained."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=build_backend_tokenizer(preset, seed),
        bos_token=preset.bos_token,
        eos_token=preset.eos_token,
        chat_template=CHAT_TEMPLATE,
        model_max_length=preset.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )

"""Converting a causal decoder: swap, one attention-transfer step, constant-size decoding state, save and reload."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from nalaformer.convert import calibrate, linearize
from nalaformer.convert.cache import cache_nbytes
from nalaformer.convert.saving import from_pretrained, save_pretrained
from nalaformer.convert.stages import freeze_for_transfer, transfer_loss

config = GPT2Config(vocab_size=96, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
teacher = GPT2LMHeadModel(config).eval()  # any GPT-2 or Llama-style model (from_pretrained of a local folder)
model = linearize(teacher, mixer="nala")  # in place: each GPT2Attention now runs NaLa on the pretrained q, k, v
batch = {"input_ids": torch.randint(0, 96, (4, 32))}
calibrate(model, [batch])  # NaLa's temperature starts at each head's median query norm
optimizer = torch.optim.Adam(freeze_for_transfer(model), lr=1e-2)  # stage 1 trains the adapters only
loss, metrics = transfer_loss(model, batch)  # per-layer output MSE + attention KL against the softmax teacher
loss.backward()
optimizer.step()
with torch.no_grad():
    short = model(batch["input_ids"][:1, :8], use_cache=True)
    long = model(batch["input_ids"][:1], use_cache=True)  # 4x the context: the same state size
    tokens = model.generate(batch["input_ids"][:1], max_new_tokens=8, do_sample=False, pad_token_id=0)
save_pretrained(model, "gpt2-nala")  # config.json, model.safetensors, conversion.json
reloaded = from_pretrained("gpt2-nala")  # offline, converted attention on
print(cache_nbytes(short) == cache_nbytes(long), tuple(tokens.shape), round(metrics["mse"], 3))

"""The NaLa causal language model: a hybrid configuration, generation with a padded batch, the Trainer-style loss."""

import torch

from nalaformer.models import NaLaConfig, NaLaForCausalLM

model = NaLaForCausalLM(NaLaConfig.from_preset("small", vocab_size=256, hybrid_every=3)).eval()
prompt = torch.randint(0, 256, (2, 12))
out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=True, top_k=40)
loss = model(prompt, labels=prompt, num_items_in_batch=22).loss  # summed over 22 targets of the whole batch / 22
model.save_pretrained("nala-small")  # loads anywhere: AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)
print(out.shape, float(loss))

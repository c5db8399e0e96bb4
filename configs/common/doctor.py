# Placeholder: the training doctor's settings (train.doctor.*); filled in by the doctor work.
doctor = dict(enabled=False)

"""The forward model: centred FFTs (:mod:`synth.physics.fft`) and linear operators
(:mod:`synth.physics.linop`), synthetic phase (:mod:`synth.physics.phase`), coil maps
(:mod:`synth.physics.coils`), SMS/CAIPI (:mod:`synth.physics.sms`), undersampling masks
(:mod:`synth.physics.masks`) and noise (:mod:`synth.physics.noise`); compiled inner loops in
:mod:`synth.physics._kernels` behind :mod:`synth.physics._jit`.

Imports only :mod:`synth.physics` and the top-level modules (:mod:`synth.errors`,
:mod:`synth.runtime`).
"""

// derrumbe C++ API umbrella. C code includes derrumbe.h instead.
#pragma once
#include "derrumbe/core/error.hpp"
#include "derrumbe/core/rng.hpp"
#include "derrumbe/models/analytic.hpp"
#include "derrumbe/sample/denoiser.hpp"
#include "derrumbe/sample/guidance.hpp"
#include "derrumbe/sample/parameterization.hpp"
#include "derrumbe/sample/sampler.hpp"
#include "derrumbe/sample/schedules.hpp"

// Precompiled header for library sources: the heavy ATen headers, parsed once.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <vector>
#include <string>
#include <functional>
#include <memory>

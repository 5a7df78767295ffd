#include "timings.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <utility>

#include "derrumbe/core/error.hpp"
#include "derrumbe/io/image.hpp"

namespace drb::pipeline::detail {

Timings::Timings(std::string file) : file_(std::move(file)) {
  std::ifstream in(file_);
  if (!in) return;
  try {
    const nlohmann::json history = nlohmann::json::parse(in);
    for (const auto& [stage, rate] : history.items())
      if (rate.is_number() && rate.get<double>() >= 0) seconds_per_unit_[stage] = rate.get<double>();
  } catch (const nlohmann::json::exception&) {
    seconds_per_unit_.clear();
  }
}

void Timings::measured(const std::string& stage, double seconds, double units) {
  if (!(units > 0) || !std::isfinite(seconds) || seconds < 0) return;
  seconds_per_unit_[stage] = seconds / units;
  try {
    io::write_atomically(file_, [&](const std::string& tmp) {
      std::ofstream(tmp) << nlohmann::json(seconds_per_unit_).dump(2) << "\n";
    });
  } catch (const Error&) {
    // A read-only cache still renders; the next run just estimates from less.
  }
}

double Timings::estimate(const std::string& stage, double units) const {
  const auto it = seconds_per_unit_.find(stage);
  return it == seconds_per_unit_.end() ? -1.0 : it->second * units;
}

}  // namespace drb::pipeline::detail

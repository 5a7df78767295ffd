// How long a shot has left (internal to the pipeline).
//
// The running stage is estimated from its own rate (steps done so far); the stages after it from
// the rates earlier runs measured, per unit of work (a frame of pixels, a sampling step over the
// latents), which are kept in the cache folder as timings.json, as a render farm keeps a job's
// history. A stage no run has measured yet counts as nothing, so a first run's estimate is a lower
// bound; from the second run on every stage is counted.
#pragma once

#include <map>
#include <string>

namespace drb::pipeline::detail {

class Timings {
 public:
  // A missing or damaged file is an empty history (estimates are advice, never an error).
  explicit Timings(std::string file);

  // Records that `stage` took `seconds` for `units` of work, and saves the history (atomically).
  void measured(const std::string& stage, double seconds, double units);

  // Seconds `units` of work of `stage` should take; -1 when no run has measured the stage.
  double estimate(const std::string& stage, double units) const;

 private:
  std::string file_;
  std::map<std::string, double> seconds_per_unit_;
};

}  // namespace drb::pipeline::detail

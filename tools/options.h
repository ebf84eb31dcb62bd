// CLI11 transforms that let every numeric size or duration option take units with
// base/units.h's grammar: `--chunk 1.5MiB`, `--interval 250ms`.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "base/units.h"

namespace hotshard::cli {

// Rewrites "1.5MiB" to "1572864" before CLI11 stores it in an integer option.
inline CLI::Validator sizeUnits() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        auto bytes = parseSize(text);
        if (!bytes.ok()) return bytes.error().message;
        text = std::to_string(*bytes);
        return {};
      },
      "SIZE", "size with units");
}

// Rewrites "250ms" to "0.25" (seconds) before CLI11 stores it in a double option.
inline CLI::Validator durationUnits() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        auto seconds = parseDurationSeconds(text);
        if (!seconds.ok()) return seconds.error().message;
        text = std::to_string(*seconds);
        return {};
      },
      "DURATION", "duration with units");
}

}  // namespace hotshard::cli

// docs/reference.md is the contract people read: every pipeline key the loader accepts and
// every CLI command and flag must be in it, so nothing is accepted that is not documented.

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "cli/command_table.h"
#include "orchestrator/pipeline/pipeline.h"

namespace lockstep {
namespace {

std::string Reference() {
  std::ifstream in(std::string(LOCKSTEP_SOURCE_DIR) + "/docs/reference.md");
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

TEST(ReferenceTest, EveryPipelineKeyTheLoaderAcceptsIsInTheReference) {
  const std::string doc = Reference();
  ASSERT_FALSE(doc.empty()) << "docs/reference.md is missing";
  const auto paths = PipelineKeyPaths();
  EXPECT_GT(paths.size(), 40u);
  for (const auto& path : paths) {
    EXPECT_NE(doc.find("`" + path + "`"), std::string::npos)
        << "pipeline key " << path << " is accepted but not in docs/reference.md";
  }
}

TEST(ReferenceTest, TheCompleteExamplePipelineLoads) {
  const std::string doc = Reference();
  const size_t start = doc.find("```yaml\n");
  ASSERT_NE(start, std::string::npos);
  const size_t end = doc.find("```", start + 8);
  auto p = ParsePipeline(doc.substr(start + 8, end - start - 8), "docs/reference.md");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->name, "monolith");
}

TEST(ReferenceTest, EveryCliCommandAndFlagIsInTheReference) {
  const std::string doc = Reference();
  ASSERT_FALSE(doc.empty()) << "docs/reference.md is missing";
  for (const auto& [command, flags] : cli::CommandFlags()) {
    EXPECT_NE(doc.find("`lockstep " + command), std::string::npos)
        << "command " << command << " is not in docs/reference.md";
    for (const auto& flag : flags) {
      EXPECT_NE(doc.find("`--" + flag), std::string::npos)
          << "flag --" << flag << " of " << command << " is not in docs/reference.md";
    }
  }
}

}  // namespace
}  // namespace lockstep

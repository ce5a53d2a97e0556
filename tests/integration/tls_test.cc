// TLS and mutual TLS with certificates this test makes with openssl (deploy/make-secrets.sh, and an expired
// one): plaintext clients, clients that do not trust the server, and under mutual TLS clients without a
// certificate, with one from another CA or with an expired one are refused; real tp-workers and tpctl
// train and report over mutual TLS with a token; plaintext beyond loopback needs --allow-insecure.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/secrets.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Subprocess;

// A PEM file the test made ("" if it cannot be read: the handshake then fails, and the test says so).
std::string Pem(const std::string& path) { return ReadCredentialFile(path).value_or(""); }

void Sh(const std::string& command) {
  auto result = testing::Run({"/bin/bash", "-c", command}, std::chrono::seconds(60), {});
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->exit_code, 0) << command << "\n" << result->err;
}

class TlsTest : public ::testing::Test {
 protected:
  // One CA with a server and a client certificate, another CA with its own, and an expired client
  // certificate from the first CA; made once for every test.
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir("tls"));
    const std::string make = absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/make-secrets.sh ");
    Sh(make + *dir_ + "/good localhost 127.0.0.1");
    Sh(make + *dir_ + "/other localhost 127.0.0.1");
    const std::string good = *dir_ + "/good", expired = *dir_ + "/expired";
    Sh(absl::StrCat("mkdir -p ", expired, " && cd ", expired,
                    " && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=expired"
                    " -keyout tls.key -out tls.csr 2>/dev/null"
                    " && openssl x509 -req -in tls.csr -CA ", good, "/ca.crt -CAkey ", good,
                    "/ca.key -CAcreateserial -days -1 -extfile <(echo extendedKeyUsage=clientAuth) -out tls.crt"
                    " 2>/dev/null"));
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string Path(const std::string& name) { return *dir_ + "/" + name; }

  void StartTls(bool mutual) {
    std::vector<std::string> args = {"--tls-cert", Path("good/server/tls.crt"), "--tls-key",
                                     Path("good/server/tls.key")};
    if (mutual) args.insert(args.end(), {"--tls-client-ca", Path("good/server/ca.crt")});
    coordinator_ = *CoordinatorProcess::Start(testing::MakeTempDir("tls-state"), args);
  }

  // A channel that trusts `ca` ("": plaintext) and shows the certificate in `client` ("": none), where
  // `client` names a directory holding tls.crt and tls.key.
  std::shared_ptr<grpc::Channel> Channel(const std::string& ca, const std::string& client = "") {
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    if (ca.empty()) return grpc::CreateCustomChannel(coordinator_->address(), grpc::InsecureChannelCredentials(), args);
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = Pem(Path(ca));
    if (!client.empty()) {
      ssl.pem_cert_chain = Pem(Path(client + "/tls.crt"));
      ssl.pem_private_key = Pem(Path(client + "/tls.key"));
    }
    return grpc::CreateCustomChannel(coordinator_->address(), grpc::SslCredentials(ssl), args);
  }

  // A token-carrying call on `channel`.
  static grpc::Status Record(const std::shared_ptr<grpc::Channel>& channel) {
    auto stub = v1::Coordinator::NewStub(channel);
    v1::RecordTpInitArgsRequest req;
    req.set_job_id("tls-job");
    req.set_tp_size(2);
    req.set_dtype(v1::DTYPE_FP32);
    v1::RecordTpInitArgsResponse resp;
    return stub->RecordTpInitArgs(testing::Deadline(5).get(), req, &resp);
  }

  // What a worker or tpctl needs in its environment to talk mutual TLS with the token.
  static std::map<std::string, std::string> ClientEnv() {
    std::map<std::string, std::string> env = testing::TokenEnv();
    env["TPCOORD_TLS_CA"] = Path("good/client/ca.crt");
    env["TPCOORD_TLS_CERT"] = Path("good/client/tls.crt");
    env["TPCOORD_TLS_KEY"] = Path("good/client/tls.key");
    return env;
  }

  static std::string* dir_;
  std::unique_ptr<CoordinatorProcess> coordinator_;
};

std::string* TlsTest::dir_ = nullptr;

TEST_F(TlsTest, TlsRefusesPlaintextAndServersItCannotVerify) {
  StartTls(/*mutual=*/false);
  EXPECT_TRUE(absl::StrContains(coordinator_->process().Stderr(), "TLS")) << coordinator_->process().Stderr();
  EXPECT_EQ(Record(Channel("")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Record(Channel("other/ca.crt")).error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::Status ok = Record(Channel("good/ca.crt"));
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  // The health service answers over TLS without a token.
  auto health = grpc::health::v1::Health::NewStub(Channel("good/ca.crt"));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckResponse serving;
  EXPECT_TRUE(health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &serving).ok());
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutACertificateFromItsCa) {
  StartTls(/*mutual=*/true);
  EXPECT_EQ(Record(Channel("")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Record(Channel("good/ca.crt")).error_code(), grpc::StatusCode::UNAVAILABLE);  // no certificate
  EXPECT_EQ(Record(Channel("good/ca.crt", "other/client")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Record(Channel("good/ca.crt", "expired")).error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::Status ok = Record(Channel("good/ca.crt", "good/client"));
  EXPECT_TRUE(ok.ok()) << ok.error_message();
}

// The happy path end to end: two tp-workers (TP=2) train over mutual TLS with the token, and tpctl reads
// the job the same way; a tpctl without a certificate gets a clear error.
TEST_F(TlsTest, WorkersAndTpctlRunOverMutualTls) {
  StartTls(/*mutual=*/true);
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int rank = 0; rank < 2; ++rank) {
    workers.push_back(*Subprocess::Start(
        {testing::BinPath("worker/tp-worker"), "--coordinator", coordinator_->address(), "--job", "secure",
         "--world-size", "2", "--tp-size", "2", "--host", "127.0.0.1", "--config",
         absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/docker/ds_config_any_tp.json"), "--random-init", "tiny", "--data",
         absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"), "--steps", "5", "--timeout", "120s"},
        ClientEnv()));
  }
  for (auto& w : workers) EXPECT_EQ(w->Wait(std::chrono::minutes(3)).value_or(-1), 0) << w->Stdout() << w->Stderr();

  const std::string tpctl = testing::BinPath("coordinator/tpctl");
  auto job = testing::Run({tpctl, "--coordinator", coordinator_->address(), "job", "secure"},
                          std::chrono::seconds(30), ClientEnv());
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->exit_code, 0) << job->err;
  EXPECT_TRUE(absl::StrContains(job->out, "generation 1: completed, world_size 2")) << job->out;
  // The same with flags instead of the environment.
  auto flags = testing::Run({tpctl, "--coordinator", coordinator_->address(), "--tls-ca", Path("good/client/ca.crt"),
                             "--tls-cert", Path("good/client/tls.crt"), "--tls-key", Path("good/client/tls.key"),
                             "health"},
                            std::chrono::seconds(30), {});
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(flags->exit_code, 0) << flags->err;

  std::map<std::string, std::string> no_certificate = ClientEnv();
  no_certificate.erase("TPCOORD_TLS_CERT");
  no_certificate.erase("TPCOORD_TLS_KEY");
  auto refused = testing::Run({tpctl, "--coordinator", coordinator_->address(), "job", "secure"},
                              std::chrono::seconds(30), no_certificate);
  ASSERT_TRUE(refused.ok());
  EXPECT_NE(refused->exit_code, 0);
  EXPECT_TRUE(absl::StrContains(refused->err, "UNAVAILABLE")) << refused->err;
}

TEST_F(TlsTest, PlaintextBeyondLoopbackNeedsAllowInsecure) {
  const std::string coordinator = testing::BinPath("coordinator/tp-coordinator");
  auto refused = testing::Run({coordinator, "--listen", "0.0.0.0:0", "--state-dir", testing::MakeTempDir("insecure")},
                              std::chrono::seconds(30), {});
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(refused->err, "--listen 0.0.0.0:0 without TLS would send every job's tokens over "
                                              "the network in the clear"))
      << refused->err;

  auto insecure = *CoordinatorProcess::StartAt("0.0.0.0:0", testing::MakeTempDir("insecure"), {"--allow-insecure"});
  EXPECT_TRUE(absl::StrContains(insecure->process().Stderr(), "warning: serving plaintext on 0.0.0.0:0"))
      << insecure->process().Stderr();
  auto tls = *CoordinatorProcess::StartAt("0.0.0.0:0", testing::MakeTempDir("tls-any"),
                                          {"--tls-cert", Path("good/server/tls.crt"), "--tls-key",
                                           Path("good/server/tls.key")});
  EXPECT_FALSE(absl::StrContains(tls->process().Stderr(), "warning")) << tls->process().Stderr();
}

TEST_F(TlsTest, BadTlsFlagsStopTheCoordinatorAtStart) {
  const std::string coordinator = testing::BinPath("coordinator/tp-coordinator");
  auto start = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {coordinator, "--listen", "127.0.0.1:0", "--state-dir",
                                     testing::MakeTempDir("bad-tls")};
    argv.insert(argv.end(), args.begin(), args.end());
    auto result = testing::Run(argv, std::chrono::seconds(30), {});
    EXPECT_TRUE(result.ok());
    EXPECT_EQ(result->exit_code, 1) << result->err;
    return result->err;
  };
  EXPECT_TRUE(absl::StrContains(start({"--tls-cert", Path("good/server/tls.crt")}),
                                "give both --tls-cert and --tls-key, or neither"));
  EXPECT_TRUE(absl::StrContains(start({"--tls-client-ca", Path("good/ca.crt")}),
                                "--tls-client-ca needs --tls-cert and --tls-key"));
  EXPECT_TRUE(absl::StrContains(start({"--tls-cert", Path("missing.crt"), "--tls-key", Path("good/server/tls.key")}),
                                "missing.crt"));
}

}  // namespace
}  // namespace tpcoord

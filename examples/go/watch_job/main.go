// Command watch_job describes a batch inference job through personalize-gateway, then watches
// it until it is done: one WatchBatchInferenceJob stream instead of a polling loop.
//
// The gateway sends the job as it is now, then once per change of its status (or last-updated
// time), and ends the stream after a terminal status. On UNAVAILABLE (a replica shutting down)
// it reconnects with backoff and skips a state it has already reported.
//
// Build with Debian's packages (golang-go, golang-google-grpc-dev, golang-goprotobuf-dev,
// protoc-gen-go-grpc): examples/go/build.sh OUT. Run:
//
//	watch_job -target 127.0.0.1:50051 arn:aws:personalize:us-east-1:123456789012:batch-inference-job/my-job
//
// Exit status: 0 the job is ACTIVE, 2 CREATE FAILED, 3 the job is unknown, 1 any other error.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/golang/protobuf/ptypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "pgwexample/gen/personalize_gateway/v1"
)

func exitCode(err error) int {
	if status.Code(err) == codes.NotFound {
		return 3
	}
	return 1
}

func when(job *pb.BatchInferenceJob) string {
	t, err := ptypes.Timestamp(job.GetLastUpdatedDateTime())
	if err != nil {
		return "?"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func run() int {
	target := flag.String("target", "127.0.0.1:50051", "the gateway's gRPC address")
	maxWait := flag.Duration("max-wait", 24*time.Hour, "give up after this long")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: watch_job [-target host:port] ARN")
		return 1
	}
	arn := flag.Arg(0)

	conn, err := grpc.Dial(*target, grpc.WithInsecure())
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return 1
	}
	defer conn.Close()
	client := pb.NewPersonalizeGatewayClient(conn)

	// Describe: what most callers did in a loop.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	resp, err := client.DescribeBatchInferenceJob(ctx, &pb.DescribeBatchInferenceJobRequest{BatchInferenceJobArn: arn})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "describe failed:", err)
		return exitCode(err)
	}
	fmt.Println("describe:", resp.GetBatchInferenceJob().GetStatus())

	// Watch: one stream instead of the loop.
	ctx, cancel = context.WithTimeout(context.Background(), *maxWait)
	defer cancel()
	var lastStatus, lastWhen string
	backoff := 500 * time.Millisecond
	for {
		stream, err := client.WatchBatchInferenceJob(ctx, &pb.WatchBatchInferenceJobRequest{BatchInferenceJobArn: arn})
		var job *pb.BatchInferenceJob
		for err == nil {
			var msg *pb.WatchBatchInferenceJobResponse
			if msg, err = stream.Recv(); err != nil {
				break
			}
			job = msg.GetBatchInferenceJob()
			if job.GetStatus() != lastStatus || when(job) != lastWhen {
				lastStatus, lastWhen = job.GetStatus(), when(job)
				fmt.Println("watch:", lastStatus, lastWhen)
			}
			backoff = 500 * time.Millisecond
		}
		switch {
		case err == io.EOF: // ended OK: the last message was terminal
			fmt.Println("done:", lastStatus)
			switch lastStatus {
			case "ACTIVE":
				return 0
			case "CREATE FAILED":
				return 2
			}
			return 1
		case status.Code(err) == codes.Unavailable && ctx.Err() == nil:
			fmt.Fprintln(os.Stderr, "reconnecting:", status.Convert(err).Message())
			time.Sleep(backoff)
			if backoff *= 2; backoff > 10*time.Second {
				backoff = 10 * time.Second
			}
		default:
			fmt.Fprintln(os.Stderr, "watch failed:", err)
			return exitCode(err)
		}
	}
}

func main() {
	os.Exit(run())
}

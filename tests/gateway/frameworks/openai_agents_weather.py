"""A tool-using agent of the OpenAI Agents SDK in its default mode (the Responses API), knowing only the gateway's
base_url and a key: argv base_url key model [streamed]. Prints one JSON line: the tool's calls and the final output.

Run as its own process, outside the repository (python -P, cwd elsewhere): the SDK's package is named `agents`, as
is this repository's agents/ directory, which would shadow it on the repository's path."""

import asyncio
import json
import sys

from openai import AsyncOpenAI

from agents import Agent, ModelSettings, Runner, function_tool, set_default_openai_client, set_tracing_disabled


async def main(base_url: str, key: str, model: str, streamed: bool) -> None:
    set_tracing_disabled(True)
    set_default_openai_client(
        AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=300), use_for_tracing=False
    )
    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        calls.append({"city": city})
        return f"It is sunny and 21 C in {city}."

    agent = Agent(
        name="weather",
        instructions="Answer weather questions with the get_weather tool.",
        model=model,
        tools=[get_weather],
        model_settings=ModelSettings(tool_choice="required", max_tokens=48, temperature=0),
    )
    question = "What is the weather in Paris?"
    if streamed:
        run = Runner.run_streamed(agent, question, max_turns=3)
        kinds = set()
        async for event in run.stream_events():
            if event.type == "raw_response_event":
                kinds.add(event.data.type)
        result, extra = run, {"event_types": sorted(kinds)}
    else:
        result, extra = await Runner.run(agent, question, max_turns=3), {}
    print(json.dumps({"calls": calls, "final_output": str(result.final_output), **extra}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], len(sys.argv) > 4 and sys.argv[4] == "streamed"))

import MeshCore
import MeshSimulator
import Testing

@Test func simulation_sameSeed_sameTrace() {
    func trace(seed: UInt64) -> UInt64 {
        let simulation = Simulation(
            seed: seed, link: LinkProfile(latency: .uniform(minMicroseconds: 100, maxMicroseconds: 2_000), lossRate: 0.05))
        simulation.formCluster(8, settings: .local)
        simulation.openSession(user: "alice", on: 3)
        simulation.crash(5)
        simulation.run(forMilliseconds: 5_000)
        return simulation.traceHash
    }
    #expect(trace(seed: 42) == trace(seed: 42))
    #expect(trace(seed: 42) != trace(seed: 43))
}

@Test func partition_twoThree_healsIntoOneCluster() throws {
    let result = Scenarios.partition(seed: 1)
    #expect(result.sidesDeclaredEachOtherDead)
    #expect(result.usersOfflineAcrossPartition)
    let heal = try #require(result.healMilliseconds)
    #expect(heal <= 3_000)
}

@Test func loss_tenPercentFiftyNodes_noDeath() {
    let result = Scenarios.loss(seed: 2, nodes: 50, lossRate: 0.1, milliseconds: 30_000)
    #expect(result.converged)
    #expect(result.deathVerdicts == 0)
}

@Test func pause_shortOfTimeout_neverDeclaredDead() throws {
    let result = Scenarios.pause(seed: 3, factor: 0.8)
    #expect(result.deathVerdicts == 0)
    #expect(result.recoveryMilliseconds != nil)
}

@Test func pause_threeTimesTimeout_deadThenRefutes() throws {
    let result = Scenarios.pause(seed: 4, factor: 3)
    #expect(result.deathVerdicts > 0)
    #expect(result.userOfflineWhilePaused)
    #expect(result.refutations > 0)
    let recovery = try #require(result.recoveryMilliseconds)
    #expect(recovery <= 5_000)
}

@Test func restart_sameAddress_neverResurrectsSessions() {
    let result = Scenarios.restart(seed: 5)
    #expect(result.resurrections == 0)
    #expect(result.stillOnlineAtEnd == 0)
    #expect(result.maxAliveAtOneAddress == 1)
    #expect(result.converged)
}

@Test func burst_fiveThousandChanges_converge() throws {
    let result = Scenarios.burst(seed: 6, nodes: 20, changes: 5_000)
    #expect(result.fewestOnline == 5_000)
    let converged = try #require(result.convergedMilliseconds)
    #expect(converged <= 30_000)
}
